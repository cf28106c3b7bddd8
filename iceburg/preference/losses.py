"""Preference losses over sequence log-probabilities (per-example vectors; callers take the mean).

Written to match TRL 1.16.0 term for term (tests/preference/test_losses.py compares them):
- DPO, sigmoid loss (Rafailov et al. 2023, eq. 7; TRL `DPOTrainer._compute_loss`, loss_type
  "sigmoid"): -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), log-probs summed over the
  answer's tokens. beta 0.1 is the paper's and TRL's default.
- ORPO (Hong et al. 2024, eqs. 4-7; TRL `ORPOTrainer.odds_ratio_loss`): NLL of the chosen answer
  minus beta * log sigmoid(log odds ratio), with per-token mean log-probs; no reference model.
  beta (the paper's lambda) 0.1 is TRL's default.
- KTO (Ethayarajh et al. 2024; TRL `KTOTrainer`, loss_type "kto"): desirable answers
  1 - sigmoid(beta * (logratio - z0)), undesirable 1 - sigmoid(beta * (z0 - logratio)), where z0
  is the detached, clamped-at-0 mean log-ratio of mismatched (prompt, other answer) sequences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_BETA = 0.1


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = DEFAULT_BETA
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and the implicit rewards beta * (policy - reference) of each side."""
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, chosen_nll: torch.Tensor,
              beta: float = DEFAULT_BETA) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair ORPO losses (chosen NLL - beta * log sigmoid(log odds)) and the log odds ratios.
    `chosen_nll` is the per-pair mean token NLL of the chosen answer (= -chosen_mean_logps)."""
    c, r = chosen_mean_logps.float(), rejected_mean_logps.float()
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return chosen_nll - beta * F.logsigmoid(log_odds), log_odds.detach()


def kto_loss(policy: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor, policy_kl: torch.Tensor,
             ref_kl: torch.Tensor, beta: float = DEFAULT_BETA, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example KTO losses (desirable first, then undesirable, as TRL orders them) and z0."""
    z0 = (policy_kl - ref_kl).mean().detach().clamp(min=0)
    logratios = policy - ref
    good, bad = labels.bool(), ~labels.bool()
    chosen = 1 - torch.sigmoid(beta * (logratios[good] - z0))
    rejected = 1 - torch.sigmoid(beta * (z0 - logratios[bad]))
    return torch.cat((desirable_weight * chosen, undesirable_weight * rejected)), z0

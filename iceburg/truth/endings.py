"""Word and verdict lists shared by the line rules (`signals.truncation`) and the last-block
review (`structure.review_cut`); a module of its own so neither imports the other at module level."""

from __future__ import annotations

# Words a sentence never ends on; a last line ending in one was cut off.
DANGLING = frozenset({"the", "a", "an", "and", "or", "of", "to", "in", "for", "with", "that", "which", "is",
                      "are", "was", "were", "be", "by", "on", "at", "as", "from", "but", "because", "this",
                      "its", "their", "than", "into", "between", "such", "if", "when", "while",
                      # added after the real corpus ("- Windows via"): prepositions, determiners and
                      # auxiliaries that need a complement
                      "via", "onto", "per", "versus", "vs", "across", "through", "without", "within", "whether",
                      "your", "our", "his", "her", "these", "those", "each", "every", "either", "neither",
                      "can", "could", "should", "would", "shall", "must", "has", "have", "had", "does", "did",
                      "been", "being", "upon", "toward", "towards", "among", "whose"})

# Verdicts of the line rules that no last-block shape overrides (structure.review_cut): an empty
# prompt, a line continued with a backslash and a new line stopped in its indentation wait for
# what never came (issue 31).
HARD_CUTS = ("the answer ends on an empty prompt", "the last line continues", "the answer ends on the indentation")

"""Text signals: each defect is found, and normal research answers (markdown, code, citations) pass."""

from __future__ import annotations

from iceburg.truth import signals

CLEAN = """Short answer: **the evidence favours a modest effect** (Smith et al., 2021) [1].

### What the trials show
| Trial | n | Result |
|---|---|---|
| A 2019 | 120 | -3.1 kg |
| B 2020 | 98 | -2.4 kg |

- Effects shrink after 12 months.
- Adherence, not timing, explains most of the difference.

```python
for i in range(3):
    print(i)
for i in range(3):
    print(i)
```

See https://doi.org/10.1000/xyz and [2]. **Confidence:** moderate."""


def test_clean_markdown_code_and_citations_have_no_defect():
    ts = signals.compute([CLEAN])
    assert ts.defects == {}
    assert ts.values["repetition"] < 1.0


def test_repetition_loop_trips_gopher_rules():
    loop = "The results are consistent with the hypothesis. " * 30
    ts = signals.compute(["Here is the answer. " + loop])
    assert "repetition" in ts.defects
    assert ts.values["dup_5gram_frac"] > signals.GOPHER_DUP_NGRAM[5]


def test_duplicate_lines_trip_line_rule():
    ts = signals.compute(["First point about data.\nSame line again here.\nSame line again here.\n"
                          "Same line again here."])
    assert ts.values["dup_line_frac"] > 0.3
    assert "repetition" in ts.defects


def test_refusal_only_when_it_opens_a_short_turn():
    assert "refusal" in signals.compute(["I'm sorry, but I can't help with that."]).defects
    assert "refusal" in signals.compute(["As an AI language model, I cannot provide that."]).defects
    long_ok = ("The study cannot tell us whether the effect is causal. " * 3
               + "I cannot verify the 2019 figure because the source is paywalled, but the two trials agree.")
    assert "refusal" not in signals.compute([long_ok]).defects


def test_truncation_and_unclosed_fence():
    assert signals.truncation("The effect was measured in 2019 and the") is not None
    assert signals.truncation("Use this:\n```python\nx = 1\n") == "unclosed code fence"
    assert signals.truncation("Findings are mixed.") is None
    assert signals.truncation("Key points:\n- first item\n- second item without a stop") is None
    assert signals.truncation("| a | b |\n|---|---|\n| 1 | 2 |") is None


def test_empty_short_and_garbage():
    assert "empty" in signals.compute(["OK"]).defects
    assert signals.compute(["Yes, that is right mostly."]).soft.get("short") == 0.25
    junk = " ".join(["\u00a7\u00b6 ### ~~ ..."] * 20) + " some words here"
    assert "garbage" in signals.compute([junk]).defects
    assert "garbage" in signals.compute(["Normal text \ufffd\ufffd\ufffd with \ufffd mojibake " * 3]).defects


def test_boilerplate_dominated_reply():
    ts = signals.compute(["Great question! I hope this helps. Let me know if you have any other questions."])
    assert "boilerplate" in ts.defects
    ok = signals.compute([CLEAN + "\n\nI hope this helps."])
    assert "boilerplate" not in ok.defects and ok.soft["boilerplate"] < 0.05


def test_role_structure():
    good = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"}]
    assert signals.role_structure(good)[0] == []
    bad = [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"},
           {"role": "user", "content": "q"}]
    problems, _ = signals.role_structure(bad)
    assert len(problems) == 3


def _reference_ngram(words, n):
    """Plain-Python Gopher n-gram fractions (the definition the numpy version implements)."""
    from collections import Counter

    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    total = sum(len(w) for w in words)
    counts = Counter(grams)
    c = max(counts.values())
    top_frac = c * max(sum(map(len, g)) for g, k in counts.items() if k == c) / total if c > 1 else 0.0
    seen, covered = set(), set()
    for i, g in enumerate(grams):
        if g in seen:
            covered.update(range(i, i + n))
        seen.add(g)
    return top_frac, sum(len(words[i]) for i in covered) / total


def test_numpy_ngram_fractions_match_plain_definition():
    import random

    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(40)]
    for _ in range(20):
        words = [rng.choice(vocab) for _ in range(rng.randint(60, 300))]
        words += words[: rng.randint(0, 40)]  # plant some repeats
        got = signals.ngram_repetition(words)
        for n in (2, 3, 4):
            assert abs(got[f"top_{n}gram_frac"] - _reference_ngram(words, n)[0]) < 1e-9
        for n in range(5, 11):
            ref = _reference_ngram(words, n)[1]
            if f"dup_{n}gram_frac" in got:
                assert abs(got[f"dup_{n}gram_frac"] - ref) < 1e-9
            else:  # skipped because it cannot exceed the 5-gram value, which is under every limit
                assert ref <= got["dup_5gram_frac"] <= 0.10


# Other scripts (docs/truth_filter.md "Other scripts"): words of scripts that do not space them or that
# carry combining marks, and their sentence marks. Natural answers written for this test.
ZH_LONG = ("大型语言模型的微调通常分为几个阶段。首先，研究人员需要收集高质量的数据，这些数据应当覆盖模型将要处理的任务类型。"
 "其次，数据需要经过清洗，去除重复、错误和低质量的样本，因为这些样本会让模型学到错误的模式。\n\n"
 "在训练阶段，低秩适配（LoRA）是一种常用的方法：它冻结原始权重，只训练少量新增的参数，因此所需的显存和计算量都大大减少。"
 "训练结束后，需要在留出的验证集上评估模型，确认它在新任务上变得更好，同时没有忘记原有的能力。\n\n"
 "最后，模型可以被导出为不同的格式，例如用于本地推理的GGUF文件。整个流程中，每一步都应当有可以复现的记录，这样出现问题时才能追溯原因。")
JA_LONG = ("大規模言語モデルの微調整は、いくつかの段階に分けて行われます。まず、研究者はモデルが扱うタスクを幅広く含む質の高いデータを集める必要があります。"
 "次に、重複や誤り、質の低いサンプルを取り除くためにデータを整えます。こうしたサンプルはモデルに誤ったパターンを学ばせてしまうからです。\n\n"
 "学習の段階では、低ランク適応（LoRA）がよく使われます。元の重みを固定し、追加された少数のパラメータだけを学習するため、必要なメモリと計算量が大きく減ります。"
 "学習の後は、取り分けておいた検証データでモデルを評価し、新しいタスクで性能が上がり、元の能力を失っていないことを確かめます。")
HI_LONG = ("बड़े भाषा मॉडल को सूक्ष्म रूप से प्रशिक्षित करने की प्रक्रिया कई चरणों में होती है। पहले शोधकर्ता उच्च गुणवत्ता वाला डेटा इकट्ठा करते हैं जो उन कार्यों को शामिल करता है जिन्हें मॉडल संभालेगा। "
 "फिर डेटा को साफ किया जाता है ताकि दोहराव, गलतियाँ और कम गुणवत्ता वाले नमूने हट जाएँ, क्योंकि ऐसे नमूने मॉडल को गलत पैटर्न सिखा सकते हैं।\n\n"
 "प्रशिक्षण के दौरान लोरा नाम की विधि अक्सर उपयोग की जाती है। यह मूल भारों को स्थिर रखती है और केवल कुछ नए मापदंडों को प्रशिक्षित करती है, इसलिए स्मृति और गणना की आवश्यकता बहुत कम हो जाती है। "
 "प्रशिक्षण के बाद मॉडल का मूल्यांकन अलग रखे गए डेटा पर किया जाता है ताकि यह पक्का हो सके कि वह नए काम में बेहतर हुआ है और पुरानी क्षमताएँ नहीं भूला है।")


def test_words_keep_combining_marks_and_split_han_and_kana():
    assert signals.words_of("आसमान नीला क्यों होता है") == ["आसमान", "नीला", "क्यों", "होता", "है"]  # re's \w split 9 ways
    assert signals.words_of("天空是蓝色 LoRA") == ["天", "空", "是", "蓝", "色", "lora"]
    assert signals.words_of("Café — naïve co-op") == ["café", "naïve", "co", "op"]
    assert signals.count_words("好。") == 1 and signals.count_words("这是一个完整的句子。") == 9
    assert signals.count_words("Sure - fine.") == 3  # ASCII: Gopher's whitespace count, unchanged


def test_natural_answers_in_other_scripts_have_no_defect():
    for text in (ZH_LONG, JA_LONG, HI_LONG, "天空呈蓝色是因为瑞利散射：空气分子对蓝光的散射比红光更强。",
                 "空が青く見えるのはレイリー散乱のためです。", "تبدو السماء زرقاء بسبب تشتت رايلي. لماذا؟",
                 "Небо голубое из-за рэлеевского рассеяния, как пишут в «учебниках»."):
        ts = signals.compute([text])
        assert ts.defects == {}, (text[:20], ts.defects)
    for text in (ZH_LONG, JA_LONG, HI_LONG):  # ~300 words, not a "short" bare verdict
        assert "short" not in signals.compute([text]).soft


THAI = ("ท้องฟ้าเป็นสีฟ้าเพราะการกระเจิงของเรย์ลีห์ โมเลกุลของอากาศกระเจิงแสงสีฟ้าได้มากกว่าแสงสีแดง "
        "จึงทำให้เราเห็นท้องฟ้าเป็นสีฟ้าในเวลากลางวัน")


def test_thai_and_khmer_are_not_one_word_and_thai_needs_no_sentence_mark():
    """Thai writes words without spaces and ends sentences with a space, not a mark: before, this
    answer was `empty` (3 "words") and `truncated`; Khmer ends sentences with its khan."""
    assert signals.count_words(THAI) == 11 + 12 + 11  # runs of 42, 48 and 44 code points, 4 a word (rounded up)
    assert signals.compute([THAI]).defects == {}
    assert signals.truncation("ជាការពិតណាស់ មេឃមានពណ៌ខៀវដោយសារតែការខ្ចាត់ខ្ចាយរបស់ពន្លឺ។") is None
    assert "empty" in signals.compute(["ครับ"]).defects  # "yes" (polite): one word still
    assert "repetition" in signals.compute(["ดีมาก " * 60]).defects


def test_defects_in_other_scripts_are_found():
    assert "repetition" in signals.compute(["这个模型非常好。" * 30]).defects
    assert "repetition" in signals.compute(["यह बहुत अच्छा है। " * 30]).defects
    assert "empty" in signals.compute(["好。"]).defects
    for cut in (ZH_LONG[:-30], JA_LONG[:-12], HI_LONG[:-25]):
        assert signals.truncation(cut) is not None, cut[-20:]
    for ended in ("这是一个完整的句子。", "「これは完全です。」", "यह पूरा वाक्य है।", "هل هذا سؤال؟", "یہ جملہ مکمل ہے۔", "Это конец.»"):
        assert signals.truncation(ended) is None, ended

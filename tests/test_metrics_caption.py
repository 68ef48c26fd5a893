"""Caption metrics: hand-worked examples per metric, and agreement with pycocoevalcap itself.

The pycocoevalcap comparison runs the toolkit's own tokenizer and scorers (Java included) on a
small COCO-style set written below, so it needs Java, which this project's machines and CI have.
"""

import math

import numpy as np
import pytest
import sacrebleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from tag2text.training.metrics import METRIC_NAMES, CaptionInputError, compute_caption_metrics
from tag2text.training.metrics.tokenization import java_available

# Image id -> reference captions, COCO style, written for this test (punctuation, case,
# possessives, contractions, hyphens, numbers and a trailing abbreviation on purpose).
REFERENCES = {
    101: [
        "A man riding a wave on top of a surfboard.",
        "A surfer in a black wetsuit rides a large wave.",
        "Man on a surf board riding the crest of a wave",
        "a person surfing on a wave in the ocean",
        "The surfer's board cuts through the blue water.",
    ],
    102: [
        "Two dogs playing with a frisbee in the park.",
        "A brown dog and a white dog chase a red frisbee.",
        "Dogs running on the grass after a flying disc",
        "two puppies fight over a toy on a lawn",
        "A pair of dogs play in a grassy field.",
    ],
    103: [
        "A plate of food with broccoli, rice and chicken.",
        "Chicken, rice, and steamed broccoli on a white plate.",
        "A healthy meal is served on a dinner plate.",
        "a close up of a plate of food on a table",
        "Dinner: grilled chicken with rice & vegetables.",
    ],
    104: [
        "A red double-decker bus driving down a city street.",
        "A double decker bus on a busy street in London.",
        "The big red bus is stopped at the corner.",
        "a bus that is driving down the road",
        "A tour bus travels past tall buildings (downtown).",
    ],
    105: [
        "A woman holding an umbrella in the rain.",
        "A lady walks down a wet sidewalk with her umbrella.",
        "Person with a black umbrella on a rainy day",
        "a woman is standing under an umbrella",
        "A woman's umbrella keeps her dry in the storm.",
    ],
    106: [
        "A cat sleeping on top of a laptop keyboard.",
        "A grey cat lies on an open laptop computer.",
        "The kitten is napping on the computer's keys.",
        "a cat laying on a laptop on a desk",
        "A lazy cat won't get off the keyboard!",
    ],
    107: [
        "A giraffe standing next to a tall tree.",
        "A giraffe eats leaves from the top of a tree.",
        "One giraffe in an enclosure near some trees",
        "a tall giraffe is standing in a field",
        "The giraffe is reaching up to eat.",
    ],
    108: [
        "A group of people sitting around a table eating pizza.",
        "Friends share a large pizza at a restaurant.",
        "Several people enjoying pizza and drinks together",
        "a family is eating dinner at a table",
        "Four people eat slices of pizza; one is laughing.",
    ],
    109: [
        "A train traveling down tracks next to a forest.",
        "A long freight train passes through the woods.",
        "The train is on the railroad tracks near trees",
        "a green and yellow train on the tracks",
        "A locomotive pulls 20 cars along the line.",
    ],
    110: [
        "A kitchen with wooden cabinets and a white stove.",
        "An old kitchen with a stove, sink and cabinets.",
        "The kitchen has brown cupboards and a window",
        "a kitchen that has a stove and a refrigerator",
        "A small kitchen -- clean and well lit.",
    ],
    111: [
        "A young boy swinging a baseball bat at a ball.",
        "A kid in a t-shirt hits a baseball with a bat.",
        "Little league batter swings at the pitch",
        "a boy is playing baseball on a field",
        "The child's swing sends the ball flying.",
    ],
    112: [
        "A bowl of fruit with bananas, apples and oranges.",
        "Fresh fruit sits in a glass bowl on the counter.",
        "Bananas and apples piled in a bowl",
        "a bowl filled with different kinds of fruit",
        "A fruit bowl: three bananas, two apples.",
    ],
    113: [
        "A man in a suit and tie standing in an office.",
        "A businessman wearing a blue tie smiles.",
        "The man is dressed in a dark suit",
        "a man wearing a suit and a tie",
        "Mr. Smith poses for a photo at work.",
    ],
    114: [
        "A herd of zebras grazing in a grassy field.",
        "Zebras eating grass on the African savanna.",
        "Several zebra standing together in the wild",
        "a group of zebras standing on a dry plain",
        "Five zebras graze near a watering hole.",
    ],
    115: [
        "A bathroom with a toilet, sink and bathtub.",
        "A clean white bathroom with a shower curtain.",
        "The bathroom has tile floors and a mirror",
        "a toilet next to a sink in a bathroom",
        "A tiny bathroom; the toilet's lid is up.",
    ],
    116: [
        "A skier going down a snowy mountain slope.",
        "A person skiing down a hill covered in snow.",
        "Skier in a red jacket on a steep run",
        "a man riding skis down a snow covered slope",
        "The skier kicks up powder on the way down.",
    ],
    117: [
        "A laptop and a cup of coffee on a wooden desk.",
        "A computer sits on a desk next to a mug.",
        "Desk with a notebook computer and a coffee cup",
        "a laptop computer sitting on top of a table",
        "Someone's workspace: laptop, coffee & a phone.",
    ],
    118: [
        "An airplane flying in a clear blue sky.",
        "A large jet plane is taking off from the airport.",
        "A passenger jet flies overhead",
        "a plane that is flying in the sky",
        "The 747 climbs into the sky after take-off.",
    ],
    119: [
        "A stop sign on the corner of a street.",
        "A red stop sign next to a road.",
        "Stop sign at an intersection in the U.S.",
        "a street sign that says stop on a pole",
        "The octagonal sign reads \"STOP\".",
    ],
    120: [
        "Two elephants walking through a dusty field.",
        "An adult elephant and a baby elephant walk together.",
        "Elephants crossing a dirt road in Africa",
        "a couple of elephants walking in the dirt",
        "A mother elephant leads her calf.",
    ],
    # The prediction repeats a reference word for word (METEOR 1.0 by hand: one full chunk, no
    # fragmentation penalty) ...
    121: [
        "A red kite flying over a sandy beach.",
        "a kite in the air above the sea shore",
        "People fly kites on a windy day at the beach",
        "A bright red kite soars in a blue sky.",
    ],
    # ... and here it shares no word with any reference (every metric 0 by hand).
    122: [
        "Horses grazing in a green pasture.",
        "Three brown horses eat grass near a fence",
        "a couple of horses standing in a field",
    ],
}

PREDICTIONS = {
    101: "A man riding a wave on a surfboard.",
    102: "Two dogs playing with a frisbee in a field.",
    103: "A plate of food with rice and broccoli.",
    104: "A red bus driving down a street.",
    105: "A woman walking with an umbrella in the rain.",
    106: "A cat laying on a laptop computer.",
    107: "A giraffe standing next to a tree.",
    108: "A group of people eating pizza at a table.",
    109: "A train on the tracks near trees.",
    110: "A kitchen with a stove and a sink.",
    111: "A boy swinging a bat at a baseball.",
    112: "A bowl of bananas and apples.",
    113: "A man wearing a suit and tie.",
    114: "A group of zebras standing in a field.",
    115: "A bathroom with a toilet and a sink.",
    116: "A person skiing down a snowy hill.",
    117: "A laptop computer on a desk.",
    118: "A plane flying in the sky.",
    119: "A stop sign on a street corner.",
    120: "Two elephants walking in the dirt.",
    121: "A red kite flying over a sandy beach.",
    122: "Purple umbrellas!",
}


def _toolkit_scores(references, predictions):
    """pycocoevalcap end to end, as COCOEvalCap.evaluate() runs it (minus SPICE)."""
    ids = list(predictions)
    gts = {i: [{"caption": c} for c in references[i]] for i in ids}
    res = {i: [{"caption": predictions[i]}] for i in ids}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    corpus, per_image = {}, {i: {} for i in ids}
    scorers = ((Bleu(4), METRIC_NAMES[:4]), (Meteor(), ["METEOR"]), (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"]))
    for scorer, names in scorers:
        if isinstance(scorer, Bleu):
            score, scores = scorer.compute_score(gts, res, verbose=0)
        else:
            score, scores = scorer.compute_score(gts, res)
            score, scores = [score], [scores]
        for name, s, per in zip(names, score, scores):
            corpus[name] = float(s)
            for i, v in zip(gts.keys(), per):
                per_image[i][name] = float(v)
    return corpus, per_image


@pytest.fixture(scope="module")
def java_results():
    assert java_available(), "these tests compare with the Java toolkit; Java must be installed"
    ours = compute_caption_metrics(REFERENCES, PREDICTIONS, tokenizer="java", meteor=True)
    corpus, per_image = _toolkit_scores(REFERENCES, PREDICTIONS)
    return ours, corpus, per_image


def test_corpus_scores_match_pycocoevalcap(java_results):
    ours, corpus, _ = java_results
    assert set(ours["corpus"]) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert ours["corpus"][name] == pytest.approx(corpus[name], abs=1e-9), name
    # Not a degenerate set: the scores are in a plausible, non-trivial range.
    assert 0.2 < ours["corpus"]["Bleu_4"] < 0.9 and 0.5 < ours["corpus"]["CIDEr"] < 3


def test_per_image_scores_match_pycocoevalcap(java_results):
    ours, _, per_image = java_results
    assert list(ours["per_image"]) == list(PREDICTIONS)
    for image, expected in per_image.items():
        for name in METRIC_NAMES:
            assert ours["per_image"][image][name] == pytest.approx(expected[name], abs=1e-9), (image, name)
    assert ours["info"]["tokenizer"] == "java" and ours["info"]["meteor"] == "computed"


def test_python_tokenizer_gives_the_same_scores(java_results):
    ours, _, _ = java_results
    python = compute_caption_metrics(REFERENCES, PREDICTIONS, tokenizer="python", meteor=False)
    assert python["info"]["tokenizer"] == "python"
    for name in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert python["corpus"][name] == pytest.approx(ours["corpus"][name], abs=1e-12)
        for image in PREDICTIONS:
            assert python["per_image"][image][name] == pytest.approx(ours["per_image"][image][name], abs=1e-12)


def test_hand_checkable_images_in_the_java_run(java_results):
    ours, _, _ = java_results
    exact, unrelated = ours["per_image"][121], ours["per_image"][122]
    assert exact["METEOR"] == pytest.approx(1.0)
    assert exact["Bleu_4"] == pytest.approx(1.0) and exact["ROUGE_L"] == pytest.approx(1.0)
    assert all(unrelated[name] == 0.0 for name in ("METEOR", "ROUGE_L", "CIDEr"))
    assert unrelated["Bleu_1"] < 1e-5


def _bleu_formula(correct, guess, test_len, ref_len):
    """The toolkit's BLEU definition written out for hand-counted statistics."""
    out, running = [], 1.0
    for k, (c, g) in enumerate(zip(correct, guess)):
        running *= (c + 1e-15) / (g + 1e-9)
        out.append(running ** (1 / (k + 1)))
    ratio = (test_len + 1e-15) / (ref_len + 1e-9)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def test_bleu_hand_worked():
    refs = {
        # hyp unigrams the,the,cat,sat,on,mat clip to 5 of 6; bigrams the-cat, on-the, the-mat: 3 of 5;
        # trigram on-the-mat: 1 of 4; no 4-gram of 3. Closest reference length 6 = hypothesis: no penalty.
        "a": ["the cat is on the mat", "there is a cat on the mat"],
        # every n-gram matches the first reference (no 4-gram exists); closest length is 6 > 3:
        # brevity penalty exp(1 - 6/3).
        "b": ["a small cat sits on the mat", "a small black cat is sitting"],
    }
    preds = {"a": "the cat sat on the mat", "b": "a small cat"}
    out = compute_caption_metrics(refs, preds, tokenizer="none", meteor=False)
    expected_a = _bleu_formula([5, 3, 1, 0], [6, 5, 4, 3], 6, 6)
    expected_b = _bleu_formula([3, 2, 1, 0], [3, 2, 1, 0], 3, 6)
    assert expected_a[1] == pytest.approx(math.sqrt(0.5))
    assert expected_b[0] == pytest.approx(math.exp(-1))
    for k in range(4):
        assert out["per_image"]["a"][f"Bleu_{k + 1}"] == pytest.approx(expected_a[k], rel=1e-9)
        assert out["per_image"]["b"][f"Bleu_{k + 1}"] == pytest.approx(expected_b[k], rel=1e-9)
    # Corpus BLEU pools the counts: 8/9, 5/7, 2/5, 0/3 with lengths 9 vs 12.
    expected_corpus = _bleu_formula([8, 5, 2, 0], [9, 7, 5, 3], 9, 12)
    for k in range(4):
        assert out["corpus"][f"Bleu_{k + 1}"] == pytest.approx(expected_corpus[k], rel=1e-9)


def test_bleu_closest_reference_length_prefers_the_shorter_on_a_tie():
    # Hypothesis of 4 words, references of 3 and 5: the toolkit takes 3, so no brevity penalty.
    refs = {"x": ["w1 w2 w3", "w1 w2 w3 w4 w5"], "y": ["p q"]}
    preds = {"x": "w1 w2 w3 w4", "y": "p q"}
    out = compute_caption_metrics(refs, preds, tokenizer="none", meteor=False)
    assert out["per_image"]["x"]["Bleu_1"] == pytest.approx(1.0, rel=1e-9)


def test_corpus_bleu_agrees_with_sacrebleu():
    # sacrebleu is an independent implementation of corpus BLEU with the same closest-length rule;
    # it differs from the toolkit only by the toolkit's 1e-15 / 1e-9 guards.
    refs = {i: [r.lower().rstrip(".") for r in REFERENCES[i]] for i in REFERENCES}
    preds = {i: PREDICTIONS[i].lower().rstrip(".") for i in PREDICTIONS}
    ids = [i for i in preds if len(refs[i]) == 5]
    refs = {i: refs[i] for i in ids}
    preds = {i: preds[i] for i in ids}
    ours = compute_caption_metrics(refs, preds, tokenizer="none", meteor=False)
    streams = [[refs[i][j] for i in ids] for j in range(5)]
    for n in range(1, 5):
        bleu = sacrebleu.metrics.BLEU(tokenize="none", smooth_method="none", max_ngram_order=n)
        expected = bleu.corpus_score([preds[i] for i in ids], streams).score / 100
        assert ours["corpus"][f"Bleu_{n}"] == pytest.approx(expected, abs=1e-8)


def test_cider_d_hand_worked():
    # Two images, so idf = log(2) - log(df). "a" occurs in both reference sets (idf 0).
    # Image A, hypothesis "a cat": against "a black cat" order 1 = 1/sqrt(2), other orders 0, length
    # penalty exp(-1/72) (1 vs 2 bigrams); against "a cat" orders 1 and 2 = 1.
    # Image B, "a dog sleeps" vs "a dog": orders 1 and 2 = 1/sqrt(2), penalty exp(-1/72).
    refs = {"A": ["a black cat", "a cat"], "B": ["a dog"]}
    preds = {"A": "a cat", "B": "a dog sleeps"}
    out = compute_caption_metrics(refs, preds, tokenizer="none", meteor=False)
    pen = math.exp(-1 / 72)
    expected_a = 10 * ((1 / math.sqrt(2) * pen + 1) + 1) / 4 / 2
    expected_b = 10 * (2 / math.sqrt(2) * pen) / 4
    assert out["per_image"]["A"]["CIDEr"] == pytest.approx(expected_a, rel=1e-12)
    assert out["per_image"]["B"]["CIDEr"] == pytest.approx(expected_b, rel=1e-12)
    assert out["corpus"]["CIDEr"] == pytest.approx((expected_a + expected_b) / 2, rel=1e-12)


def test_cider_d_of_identical_captions_and_single_image():
    refs = {"A": ["a cat"], "B": ["a dog"]}
    # Identical one-reference captions: orders 1-2 are cosine 1, orders 3-4 empty -> 10 * 2/4.
    out = compute_caption_metrics(refs, {"A": "a cat", "B": "a dog"}, tokenizer="none", meteor=False)
    assert out["corpus"]["CIDEr"] == pytest.approx(5.0)
    # One image: every idf is log(1) - log(1) = 0, so CIDEr-D is 0 (as in the toolkit).
    single = compute_caption_metrics({"A": ["a cat"]}, {"A": "a cat"}, tokenizer="none", meteor=False)
    assert single["corpus"]["CIDEr"] == 0.0


def test_rouge_l_hand_worked():
    # LCS with "cat mat": 2 -> P 2/6, R 1; with "a cat on a red mat today": "a cat on mat" 4 -> P 4/6, R 4/7.
    # ROUGE-L takes the best P (4/6) and the best R (1) from different references, beta = 1.2.
    refs = {"r": ["cat mat", "a cat on a red mat today"], "s": ["x y"]}
    preds = {"r": "a cat sat on the mat", "s": "x y"}
    out = compute_caption_metrics(refs, preds, tokenizer="none", meteor=False)
    p, r, b2 = 4 / 6, 1.0, 1.2**2
    assert out["per_image"]["r"]["ROUGE_L"] == pytest.approx((1 + b2) * p * r / (r + b2 * p), rel=1e-12)
    assert out["per_image"]["s"]["ROUGE_L"] == pytest.approx(1.0)


def test_prediction_for_unknown_image_is_an_error():
    with pytest.raises(CaptionInputError, match="without references.*'ghost'"):
        compute_caption_metrics({"a": ["a cat"]}, {"a": "a cat", "ghost": "a dog"}, tokenizer="none", meteor=False)


def test_image_with_no_references_is_an_error():
    with pytest.raises(CaptionInputError, match="'b' has no references"):
        compute_caption_metrics({"a": ["a cat"], "b": []}, {"a": "a cat", "b": "a dog"}, tokenizer="none",
                                meteor=False)


def test_wrong_types_are_errors():
    with pytest.raises(TypeError, match="one caption string"):
        compute_caption_metrics({"a": ["a cat"]}, {"a": ["a cat"]}, tokenizer="none", meteor=False)
    with pytest.raises(TypeError, match="list of captions"):
        compute_caption_metrics({"a": "a cat"}, {"a": "a cat"}, tokenizer="none", meteor=False)
    with pytest.raises(CaptionInputError, match="no predictions"):
        compute_caption_metrics({"a": ["a cat"]}, {}, tokenizer="none", meteor=False)


def test_empty_captions_are_counted_and_scored_as_the_toolkit_does():
    refs = {"a": ["a cat on a mat", "...", "a small cat"], "b": ["a dog in a park", "a brown dog"], "c": ["a bird"]}
    preds = {"a": "A cat on a mat.", "b": "", "c": "?"}  # "?" is punctuation: nothing is left
    out = compute_caption_metrics(refs, preds, tokenizer="python", meteor=False)
    assert out["info"]["empty_predictions"] == 2
    assert out["info"]["empty_references_dropped"] == 1  # "..." is only punctuation
    assert out["info"]["num_references"] == 5
    for image in ("b", "c"):
        assert all(out["per_image"][image][m] == 0.0 for m in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"))
    assert out["per_image"]["a"]["Bleu_1"] == pytest.approx(1.0, rel=1e-9)


def test_image_whose_references_are_all_empty_is_an_error():
    with pytest.raises(CaptionInputError, match="'a': all 2 references are empty"):
        compute_caption_metrics({"a": ["", " . "], "b": ["a dog"]}, {"a": "a cat", "b": "a dog"}, tokenizer="python",
                                meteor=False)


def test_images_without_prediction_are_not_scored_but_counted():
    refs = {"a": ["a cat"], "b": ["a dog"], "c": ["a bird"]}
    out = compute_caption_metrics(refs, {"c": "a bird", "a": "a cat"}, tokenizer="none", meteor=False)
    assert list(out["per_image"]) == ["a", "c"]  # reference order, as the toolkit iterates its images
    assert out["info"]["images_without_prediction"] == 1
    # Scored alone, "a" and "c" give the same CIDEr as this pair (idf over the scored set only).
    pair = compute_caption_metrics({"a": ["a cat"], "c": ["a bird"]}, {"a": "a cat", "c": "a bird"}, tokenizer="none",
                                   meteor=False)
    assert out["corpus"]["CIDEr"] == pytest.approx(pair["corpus"]["CIDEr"])


def test_meteor_is_none_without_java(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without java: the real no-Java code path
    out = compute_caption_metrics({"a": ["a cat"], "b": ["a dog"]}, {"a": "a cat", "b": "a dog"})
    assert out["corpus"]["METEOR"] is None and out["per_image"]["a"]["METEOR"] is None
    assert out["info"]["tokenizer"] == "python"
    assert out["info"]["meteor"] == "skipped: Java not found"
    with pytest.raises(RuntimeError, match="java"):
        compute_caption_metrics({"a": ["a cat"]}, {"a": "a cat"}, tokenizer="none", meteor=True)
    with pytest.raises(RuntimeError, match="java"):
        compute_caption_metrics({"a": ["a cat"]}, {"a": "a cat"}, tokenizer="java", meteor=False)


def test_per_image_order_and_values_do_not_depend_on_prediction_order():
    preds_reversed = dict(reversed(list(PREDICTIONS.items())))
    a = compute_caption_metrics(REFERENCES, PREDICTIONS, tokenizer="python", meteor=False)
    b = compute_caption_metrics(REFERENCES, preds_reversed, tokenizer="python", meteor=False)
    assert list(a["per_image"]) == list(b["per_image"])
    assert np.allclose([a["corpus"][m] for m in ("Bleu_4", "CIDEr")], [b["corpus"][m] for m in ("Bleu_4", "CIDEr")])

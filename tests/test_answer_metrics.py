"""Answer metrics as the reference evaluation scores them, alias handling, nDCG."""

import math

import pytest

from scaledown.eval.answers import exact_match, normalize_answer, rouge_l, substring_match, token_f1


@pytest.mark.parametrize("pred, gold, em, sub, f1", [
    ("The Eiffel Tower.", "eiffel tower", 1.0, 1.0, 1.0),
    ("It is in Paris, France", "Paris", 0.0, 1.0, 1 / 3),
    ("Parisian food", "Paris", 0.0, 1.0, 0.0),  # the reference's accuracy is a plain substring test
    ("«Zürich»", "zürich", 0.0, 1.0, 0.0),  # only ASCII punctuation is removed, as in SQuAD's script
    ("an apple a day", "apple day", 1.0, 1.0, 1.0),
    ("", "x", 0.0, 0.0, 0.0),
    # The three cases the reference scores 1 and an earlier word-boundary version scored 0:
    ("In the 1960s.", "1960", 0.0, 1.0, 0.0),
    ("U.S.A.", "USA", 1.0, 1.0, 1.0),
    ("10,000 people", "10000", 0.0, 1.0, 2 / 3),
])
def test_answer_metrics_as_the_reference_scores_them(pred, gold, em, sub, f1):
    assert exact_match(pred, gold) == em
    assert substring_match(pred, gold) == sub
    assert token_f1(pred, gold) == pytest.approx(f1)


def test_normalisation_and_rouge_l():
    assert normalize_answer("  The  Cat's—hat!  ") == "cats—hat"
    assert rouge_l("w x y z", "w y z q") == pytest.approx(0.75)  # LCS 3 of 4 and 4
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)  # rouge-score keeps articles


def test_metrics_take_the_best_alias_and_score_gold_before_the_teacher():
    from scaledown.data.schema import Record
    from scaledown.eval.answers import score_records, summarize

    recs = [Record("q", ["d"], answer="the teacher says 1961", gold_answers=["nineteen sixty", "1960"]),
            Record("q", ["d"], answer="Paris", gold_answers=None)]
    sums = score_records(["It was 1960.", "paris"], recs)
    assert sums["accuracy"] == 2.0 and sums["exact_match"] == 1.0  # alias "1960"; record 2 falls back to answer
    means = summarize(sums)
    assert means["accuracy"] == 1.0
    assert means["teacher_f1"] == pytest.approx(token_f1("It was 1960.", "the teacher says 1961"))


def test_ndcg():
    from scaledown.eval.answers import ndcg_at_k

    assert ndcg_at_k([3.0, 2.0, 1.0], [2, 1, 0]) == pytest.approx(1.0)
    # Relevant document ranked second of two: (2^1-1)/log2(3) over the ideal 1/log2(2).
    assert ndcg_at_k([0.1, 0.9], [1, 0]) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k([1.0, 2.0], [0, 0]) == 0.0

import numpy as np
import pytest

from sigedge.evaluate import protocol_scores

#: Writer a's genuines point along x, b's along y (as enrolled).
ENROLLED = np.array([[1, 0]] * 4 + [[0, 1]] * 4, np.float32)
WRITERS = ["a"] * 4 + ["b"] * 4
KINDS = ["genuine"] * 8


def test_protocol_scores_genuines_and_random_impostors():
    scores = protocol_scores(ENROLLED, WRITERS, KINDS, references=2, seed=0)
    assert scores.writers == 2 and len(scores.skilled) == 0
    assert len(scores.genuine) == 4  # 2 per writer after drawing 2 references
    assert len(scores.random) == 8  # every genuine of the other writer
    assert np.allclose(scores.genuine, 1.0) and np.allclose(scores.random, 0.0)


def test_query_embeddings_are_scored_against_references_from_the_enrolled_ones():
    queries = ENROLLED.copy()
    queries[3] = (0.6, 0.8)  # one of a's signatures, captured differently
    scores = protocol_scores(ENROLLED, WRITERS, KINDS, references=2, seed=0, query_embeddings=queries)
    assert max(scores.random) == pytest.approx(0.8)  # row 3 as an impostor of b, scored as captured
    same = protocol_scores(ENROLLED, WRITERS, KINDS, references=2, seed=0)
    assert max(same.random) == pytest.approx(0.0)

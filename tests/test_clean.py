import cv2
import numpy as np

from sigedge.clean import CleanOptions, clean_signature
from sigedge.synth import synthetic_signature


def test_ruled_line_and_box_removed_signature_kept():
    sig = cv2.cvtColor(synthetic_signature(5, 0, size=(200, 500)), cv2.COLOR_BGR2GRAY)
    cluttered = sig.copy()
    cv2.rectangle(cluttered, (2, 2), (497, 197), 0, 2)
    cv2.line(cluttered, (0, 150), (499, 150), 30, 2)
    cleaned = clean_signature(cluttered)
    assert cleaned[150, 5:30].min() > 200  # line gone where no stroke crosses it
    assert cleaned[2, 100:400].min() > 200 and cleaned[100, 2] > 200  # box gone
    sig_ink = sig < 128
    kept = (cleaned[sig_ink] < 128).mean()
    assert kept > 0.85  # the signature itself survives


def test_specks_removed():
    sig = cv2.cvtColor(synthetic_signature(6, 0), cv2.COLOR_BGR2GRAY)
    noisy = sig.copy()
    rng = np.random.default_rng(0)
    for y, x in zip(rng.integers(0, 160, 30), rng.integers(0, 400, 30)):
        noisy[y, x] = 0
    cleaned = clean_signature(noisy, CleanOptions(remove_specks=True))
    specks = (noisy < 128) & ~(cv2.dilate((sig < 200).astype(np.uint8), np.ones((5, 5))) > 0)
    assert (cleaned[specks] > 200).mean() > 0.9

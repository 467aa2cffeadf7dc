"""Generate the example document pages in ``examples/pages/`` (already committed).

    python examples/make_example_pages.py

Each page is drawn with OpenCV (printed text in Hershey fonts, rules, boxes) and signed
with one of the bundled example signatures (``examples/images``, MIT licence, see
ATTRIBUTION.md), pasted with ink blending. Only signatures that are *not* used as
enrolment references in the demo are pasted, so the demo's checks are honest:

* ``cheque_e001.jpg``  a cheque signed by e001 (e001_n1_phone_b)
* ``letter_e001.jpg``  a letter signed by e001 (same signature, smaller, rotated)
* ``letter_e006.jpg``  a letter signed by e006 writing the same name (e006_n1_phone_b)
* ``memo_unsigned.jpg`` a memo with a handwritten date but no signature
* ``contract_both.jpg`` a contract signed by both (two signatures on one page)

Deterministic (fixed seed); needs only numpy and OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sigedge.imageio import load_image
from training.docsynth import _blend_ink, signature_ink

HERE = Path(__file__).resolve().parent
IMAGES, PAGES = HERE / "images", HERE / "pages"
FONT, SCRIPT = cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX
LOREM = ("the committee reviewed the attached report and agreed to the schedule of payments "
         "set out below please sign and return one copy of this letter to our office").split()


def text(page, s, x, y, scale=0.7, face=FONT, thick=1, ink=25):
    cv2.putText(page, s, (x, y), face, scale, ink, thick, cv2.LINE_AA)


def paragraph(page, x, y, width, lines, rng, scale=0.6):
    for _ in range(lines):
        words, line = list(rng.permutation(LOREM)), ""
        while words and cv2.getTextSize(line + " " + words[0], FONT, scale, 1)[0][0] < width:
            line = (line + " " + words.pop(0)).strip()
        text(page, line, x, y, scale)
        y += int(34 * scale / 0.6)
    return y


def sign(page, name, x, y, width, angle=0.0, strength=0.95):
    ink = signature_ink(load_image(IMAGES / name), 600)
    h, w = ink.shape
    ink = cv2.resize(ink, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    if angle:
        m = cv2.getRotationMatrix2D((ink.shape[1] / 2, ink.shape[0] / 2), angle, 1.0)
        ink = cv2.warpAffine(ink, m, (ink.shape[1], ink.shape[0]))
    layer = np.zeros_like(page)
    layer[y:y + ink.shape[0], x:x + ink.shape[1]] = ink
    _blend_ink(page, layer, strength)


def scanned(page, rng):
    """A light scan look: paper tone and noise (the page is then saved as JPEG, like a scan)."""
    img = page.astype(np.float32) * 0.96 + rng.normal(0, 3, page.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def cheque(rng):
    page = np.full((700, 1600), 255, np.uint8)
    cv2.rectangle(page, (20, 20), (1580, 680), 60, 3)
    text(page, "FIRST EDGE BANK", 60, 90, 1.3, thick=2)
    text(page, "No. 004271", 1300, 90, 0.8)
    text(page, "Date", 1050, 170, 0.8)
    cv2.line(page, (1130, 175), (1500, 175), 40, 1)
    text(page, "28/11/2026", 1160, 165, 1.0, SCRIPT, 2)
    text(page, "PAY TO THE ORDER OF", 60, 260, 0.8)
    cv2.line(page, (400, 265), (1200, 265), 40, 1)
    text(page, "Jan de Vries", 450, 250, 1.2, SCRIPT, 2)
    cv2.rectangle(page, (1250, 215), (1530, 280), 40, 2)
    text(page, "1,250.00", 1280, 262, 1.1)
    cv2.line(page, (60, 345), (1200, 345), 40, 1)
    text(page, "one thousand two hundred fifty -- 00/100", 80, 335, 1.0, SCRIPT, 2)
    text(page, "MEMO", 60, 480, 0.7)
    cv2.line(page, (150, 485), (700, 485), 40, 1)
    cv2.line(page, (950, 540), (1500, 540), 40, 1)
    text(page, "AUTHORISED SIGNATURE", 1100, 575, 0.6)
    sign(page, "e001_n1_phone_b.jpg", 1000, 320, 380)  # resting on the line, as signed
    text(page, "|: 0123456789 :|  004271  ||' 55 0071 9'||", 200, 640, 0.9, cv2.FONT_HERSHEY_COMPLEX)
    return scanned(page, rng)


def letter(rng, signer, closing="Yours sincerely,", angle=0.0, sig_width=330):
    page = np.full((1754, 1240), 255, np.uint8)
    cv2.circle(page, (150, 150), 50, 70, -1)
    text(page, "EDGE HOLDINGS B.V.", 230, 165, 1.2, thick=2)
    text(page, "Keizersgracht 100, Amsterdam", 230, 205, 0.6)
    text(page, "Amsterdam, 28 November 2026", 800, 320, 0.6)
    text(page, "Dear Sir or Madam,", 120, 420, 0.7)
    y = paragraph(page, 120, 480, 1000, 9, rng)
    y = paragraph(page, 120, y + 30, 1000, 6, rng)
    text(page, closing, 120, y + 60, 0.7)
    if signer:
        sign(page, signer, 120, y + 90, sig_width, angle)
    text(page, "J. de Vries, Director", 120, y + 300, 0.65)
    text(page, "page 1 of 1", 560, 1700, 0.5)
    return scanned(page, rng)


def memo(rng):
    page = np.full((1754, 1240), 255, np.uint8)
    text(page, "MEMORANDUM", 120, 160, 1.4, thick=2)
    for i, (k, v) in enumerate((("To:", "All branches"), ("From:", "Back office"), ("Re:", "Archive review"))):
        text(page, k, 120, 260 + 50 * i, 0.7)
        text(page, v, 260, 260 + 50 * i, 0.7)
    cv2.line(page, (120, 420), (1120, 420), 40, 2)
    y = paragraph(page, 120, 480, 1000, 12, rng)
    for r in range(5):  # a small table
        cv2.line(page, (120, y + 40 + 40 * r), (1120, y + 40 + 40 * r), 40, 1)
    for c in (120, 520, 820, 1120):
        cv2.line(page, (c, y + 40), (c, y + 200), 40, 1)
    text(page, "seen 2/12/26", 800, y + 320, 1.2, SCRIPT, 2)  # a note, not a signature
    return scanned(page, rng)


def contract(rng):
    page = np.full((1754, 1240), 255, np.uint8)
    text(page, "SERVICE AGREEMENT", 380, 160, 1.2, thick=2)
    y = paragraph(page, 120, 260, 1000, 16, rng)
    y = paragraph(page, 120, y + 30, 1000, 8, rng)
    for i, (who, sig) in enumerate((("For the client", "e001_n1_phone_b.jpg"),
                                    ("For the provider", "e006_n1_phone_b.jpg"))):
        x = 120 + 560 * i
        text(page, who, x, y + 80, 0.65)
        sign(page, sig, x + 10, y + 110, 300, angle=(-4.0 if i else 3.0))
        cv2.line(page, (x, y + 290), (x + 420, y + 290), 40, 1)
    return scanned(page, rng)


def main() -> None:
    PAGES.mkdir(exist_ok=True)
    rng = np.random.default_rng(2026)
    pages = {
        "cheque_e001.jpg": cheque(rng),
        "letter_e001.jpg": letter(rng, "e001_n1_phone_b.jpg", angle=-5.0, sig_width=280),
        "letter_e006.jpg": letter(rng, "e006_n1_phone_b.jpg", closing="Kind regards,"),
        "memo_unsigned.jpg": memo(rng),
        "contract_both.jpg": contract(rng),
    }
    for name, img in pages.items():
        cv2.imwrite(str(PAGES / name), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        print(PAGES / name)


if __name__ == "__main__":
    main()

"""Back office: "show me every document signed by X".

    python examples/find_signed_pages.py GALLERY WRITER PAGE_OR_FOLDER...

Every page is searched for signatures with the bundled detector; each signature found is
identified against the gallery (1:N, open set). A signature identified as WRITER is then
verified 1:1 against WRITER's references (with the bundle's learned scorer; by the cosine,
and said so, for references enrolled without ink statistics). Identification finds the
writer among many; verification is the stricter check against skilled forgeries. A page is
listed as signed by WRITER when verification accepts the signature or refers it to a
person (the band says which); one that verification rejects is listed as rejected and not
counted. Uses only the public API: ``Pipeline`` and ``Gallery``.
Exit code 0 when at least one page was found, 1 when none, 2 on a usage error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from sigedge import Gallery, InvalidImageError, NoSignatureError, Pipeline, SigedgeError

PAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def pages_in(args: list[str]) -> list[Path]:
    pages: list[Path] = []
    for a in map(Path, args):
        pages += sorted(p for p in a.iterdir() if p.suffix.lower() in PAGE_SUFFIXES) if a.is_dir() else [a]
    return pages


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    gallery_dir, writer, pages = Path(argv[0]), argv[1], pages_in(argv[2:])
    pipe = Pipeline()
    hits, bands = 0, {"accept": 0, "refer": 0, "reject": 0}
    with Gallery(gallery_dir, pipe, create=False) as gallery:
        for page in pages:
            try:
                signatures = pipe.signatures_on_page(page)
            except SigedgeError as exc:
                print(f"{page}: skipped ({exc})", file=sys.stderr)
                continue
            for sig in signatures:
                try:
                    matches = gallery.identify(sig.crop, k=1)
                    named = bool(matches) and matches[0].writer_id == writer
                    check = gallery.verify(writer, sig.crop) if named else None
                except (NoSignatureError, InvalidImageError):
                    continue  # a box with no usable ink
                if check is not None:
                    band = check.band or ("accept" if check.genuine else "reject")
                    x0, y0, x1, y1 = (round(v) for v in sig.detection.box)
                    verdict = f"rejected as {writer}" if band == "reject" else f"signed by {writer}"
                    scorer = "" if check.scorer == "learned" else f" ({check.scorer})"
                    print(f"{page}\t{verdict}\tbox {x0},{y0},{x1},{y1}\tidentify {matches[0].score:.3f}"
                          f"\tverify {check.score:.3f} {band}{scorer}")
                    hits += band != "reject"
                    bands[band] += 1
                    if band != "reject":
                        break  # the page is found; a rejected signature leaves its others to look at
    print(f"{hits} of {len(pages)} page(s) signed by {writer} (verification: {bands['accept']} accept, "
          f"{bands['refer']} refer; {bands['reject']} identified signature(s) rejected)", file=sys.stderr)
    return 0 if hits else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

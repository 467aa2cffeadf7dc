"""examples/find_signed_pages.py on the bundled example pages and images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sigedge import Gallery
from tests.helpers import REPO

EXAMPLES = REPO / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def enrolled_gallery(gallery_dir: Path, pipeline, writers: tuple[str, ...]) -> Path:
    """A gallery of the bundled writers, each enrolled from their paper, iPad and phone images."""
    with Gallery(gallery_dir, pipeline, create=True) as gallery:
        for writer in writers:
            gallery.enroll(writer, [EXAMPLES / "images" / f"{writer}_n1_{medium}.jpg"
                                    for medium in ("paper", "ipad", "phone_a")])
    return gallery_dir


def test_find_signed_pages_lists_the_writers_pages_with_a_verification(tmp_path, pipeline, capsys):
    gallery_dir = enrolled_gallery(tmp_path / "branch.gallery", pipeline, ("e001", "e006"))
    find = load_example("find_signed_pages")

    assert find.main([str(gallery_dir), "e001", str(EXAMPLES / "pages")]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    # the pages e001 signed (make_example_pages.py), not e006's letter nor the unsigned memo
    assert sorted(Path(line.split("\t")[0]).name for line in lines) == [
        "cheque_e001.jpg", "contract_both.jpg", "letter_e001.jpg"]
    for line in lines:
        verify = line.split("\t")[-1].split()
        assert line.split("\t")[1] == "signed by e001"
        assert verify[0] == "verify" and 0.0 <= float(verify[1]) <= 1.0 and verify[2] in ("accept", "refer")
        assert len(verify) == 3  # the learned scorer, so no "(cosine)"
    assert "3 of 5 page(s) signed by e001 (verification:" in err

    assert find.main([str(gallery_dir), "nobody", str(EXAMPLES / "pages")]) == 1
    assert find.main([str(gallery_dir)]) == 2


def test_find_signed_pages_does_not_count_a_signature_verification_rejects(tmp_path, pipeline, capsys, monkeypatch):
    import dataclasses

    gallery_dir = enrolled_gallery(tmp_path / "branch.gallery", pipeline, ("e001",))
    real_verify = Gallery.verify
    monkeypatch.setattr(Gallery, "verify", lambda self, writer, image: dataclasses.replace(
        real_verify(self, writer, image), band="reject", genuine=False))  # as for a skilled forgery
    find = load_example("find_signed_pages")

    assert find.main([str(gallery_dir), "e001", str(EXAMPLES / "pages" / "cheque_e001.jpg")]) == 1
    out, err = capsys.readouterr()
    assert out.split("\t")[:2] == [str(EXAMPLES / "pages" / "cheque_e001.jpg"), "rejected as e001"]
    assert "0 of 1 page(s) signed by e001 (verification: 0 accept, 0 refer; 1 identified signature(s) rejected)" in err

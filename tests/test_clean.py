import cv2
import numpy as np

from sigedge.clean import CleanOptions, clean_signature, clean_signature_with_share
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


def test_cleaner_canvas_keeps_aspect_centres_and_inverts():
    from sigedge.clean import canvas_to_crop, cleaner_canvas

    flat = np.full((50, 400), 255, np.uint8)
    flat[20:30, 100:300] = 0  # a dark bar
    canvas, p = cleaner_canvas(flat, 128, 256)
    assert canvas.shape == (128, 256) and canvas.dtype == np.float32
    assert (p.height, p.width) == (32, 256) and (p.top, p.left) == (48, 0)  # 400x50 -> 256x32, centred
    assert canvas[:p.top].max() == 0.0 and canvas[p.top + p.height:].max() == 0.0  # padding is paper
    assert canvas[p.top + 16, 128] > 0.95 and canvas[p.top + 2, 10] < 0.05  # ink 1, paper 0
    back = canvas_to_crop(canvas, p, flat.shape)
    assert back.shape == flat.shape and back[25, 200] > 0.9 and back[5, 5] < 0.05
    tall, q = cleaner_canvas(np.full((300, 30), 255, np.uint8), 128, 256)
    assert (q.height, q.width) == (128, 13) and q.left == (256 - 13) // 2


def test_learned_cleaning_needs_a_cleaner_and_a_threshold(tmp_path):
    import json
    import shutil

    import pytest

    from sigedge.bundle import ModelBundle, default_bundle_dir, spec_from_entry
    from sigedge.clean import LearnedCleaner
    from sigedge.errors import ModelError, UsageError
    from sigedge.pipeline import Pipeline, PipelineOptions

    sig = synthetic_signature(5, 0)
    with pytest.raises(UsageError, match="cleaner"):
        clean_signature(sig, CleanOptions(method="learned"))
    bundle = tmp_path / "b"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"] = {r: m for r, m in manifest["models"].items() if not r.startswith("cleaner")}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="no 'cleaner' model"):
        Pipeline(bundle, PipelineOptions(clean_options=CleanOptions(method="learned")))
    assert Pipeline(bundle, PipelineOptions(clean_options=CleanOptions(method="auto"))).cleaner is None
    shipped = ModelBundle.load()
    if "cleaner" in shipped.models:
        raw = {k: v for k, v in shipped.model("cleaner").raw.items() if k != "cleaning"}
        with pytest.raises(ModelError, match="cleaning.threshold"):
            LearnedCleaner(spec_from_entry(shipped.directory, "cleaner", raw))


def test_shipped_learned_cleaner_removes_printed_text_and_keeps_the_signature():
    from sigedge.bundle import ModelBundle
    from sigedge.clean import LearnedCleaner

    cleaner = LearnedCleaner(ModelBundle.load().model("cleaner"))
    sig = cv2.cvtColor(synthetic_signature(7, 0, size=(200, 500)), cv2.COLOR_BGR2GRAY)
    sig_ink = sig < 128
    alone = clean_signature(sig, CleanOptions(method="learned"), cleaner)
    assert (alone[sig_ink] < 128).mean() > 0.9  # a clean crop is left (nearly) alone
    cluttered = sig.copy()
    for k, y in enumerate((40, 95, 150)):  # lines of printed text across the signature
        cv2.putText(cluttered, "PAY TO THE ORDER OF 1234.00"[k:], (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 40, 2)
    text_ink = (cluttered < 128) & ~(cv2.dilate(sig_ink.astype(np.uint8), np.ones((5, 5))) > 0)
    learned = clean_signature(cluttered, CleanOptions(method="learned"), cleaner)
    classic = clean_signature(cluttered, CleanOptions(method="classic"))
    assert (classic[text_ink] < 128).mean() > 0.9  # the classic rules cannot tell text from ink
    assert (learned[text_ink] < 128).mean() < 0.5  # the learned cleaner takes most of it away
    assert (learned[sig_ink] < 128).mean() > 0.75  # and keeps most of the signature


def test_learned_cleaning_is_gated_by_the_share_of_ink_it_removes():
    from sigedge.bundle import ModelBundle
    from sigedge.clean import LearnedCleaner

    cleaner = LearnedCleaner(ModelBundle.load().model("cleaner"))
    assert 0.0 <= cleaner.min_removed_share < 0.5  # the manifest's gate
    sig = cv2.cvtColor(synthetic_signature(7, 0, size=(200, 500)), cv2.COLOR_BGR2GRAY)
    cluttered = sig.copy()
    for k, y in enumerate((40, 95, 150)):
        cv2.putText(cluttered, "PAY TO THE ORDER OF 1234.00"[k:], (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 40, 2)
    classic = clean_signature(cluttered, CleanOptions(method="classic"))
    ungated = clean_signature(cluttered, CleanOptions(method="learned", min_removed_share=0.0), cleaner)
    never = clean_signature(cluttered, CleanOptions(method="learned", min_removed_share=1.01), cleaner)
    assert np.array_equal(never, classic)  # below the gate: the classic rules alone
    assert (ungated == 255).sum() > (classic == 255).sum() + 1000  # above it: the printed text goes
    # the shipped gate lets this crop through: the text is far more than the gate's share of its ink
    assert np.array_equal(clean_signature(cluttered, CleanOptions(method="learned"), cleaner), ungated)
    # the share the gate compares: between the gates that let this crop through and those that do not
    image, share = clean_signature_with_share(cluttered, CleanOptions(method="learned", min_removed_share=0.0), cleaner)
    assert np.array_equal(image, ungated) and 0.0 < share < 1.0
    below = clean_signature(cluttered, CleanOptions(method="learned", min_removed_share=share - 1e-6), cleaner)
    above = clean_signature(cluttered, CleanOptions(method="learned", min_removed_share=share + 1e-3), cleaner)
    assert np.array_equal(below, ungated) and np.array_equal(above, classic)
    assert clean_signature_with_share(cluttered, CleanOptions(method="classic"), cleaner)[1] == 0.0


def test_a_crop_cleaned_first_embeds_as_the_learned_pipeline_embeds_it():
    # export/fit_cleaner_gate relies on this to run the cleaner once a crop
    from sigedge.pipeline import Pipeline, PipelineOptions

    learned_opts = CleanOptions(method="learned", min_removed_share=0.0)
    learned = Pipeline(options=PipelineOptions(clean_options=learned_opts))
    uncleaned = Pipeline(options=PipelineOptions(clean=False))
    crop = cv2.cvtColor(synthetic_signature(3, 1, size=(200, 500)), cv2.COLOR_BGR2GRAY)
    cv2.line(crop, (0, 150), (499, 150), 30, 2)
    cv2.putText(crop, "SIGNATURE", (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 40, 2)
    cleaned, share = clean_signature_with_share(crop, learned_opts, learned.cleaner)
    assert share > 0.0
    a, b = learned.describe(crop), uncleaned.describe(cleaned)
    assert np.array_equal(a.embedding, b.embedding)

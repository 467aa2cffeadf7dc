#!/usr/bin/env bash
# The main job on the bundled models and bundled example images (see images/ATTRIBUTION.md):
# 1:1 verification of a genuine and of a same-name impostor, then 1:N identification
# against a gallery of two enrolled writers.
set -u
cd "$(dirname "$0")/images"
gallery="$(mktemp -d)/branch.gallery"

echo "== sigedge verify: e001's phone signature against e001's paper, iPad and phone references"
sigedge verify e001_n1_phone_b.jpg e001_n1_paper.jpg e001_n1_ipad.jpg e001_n1_phone_a.jpg
echo "(exit code $?)"
echo
echo "== sigedge verify: e006 writing the same name, against e001's references"
sigedge verify e006_n1_phone_b.jpg e001_n1_paper.jpg e001_n1_ipad.jpg e001_n1_phone_a.jpg
echo "(exit code $?)"
echo
echo "== sigedge enroll + identify (gallery $gallery)"
sigedge enroll "$gallery" e001 e001_n1_paper.jpg e001_n1_ipad.jpg e001_n1_phone_a.jpg || exit $?
sigedge enroll "$gallery" e006 e006_n1_paper.jpg e006_n1_ipad.jpg e006_n1_phone_a.jpg || exit $?
sigedge identify "$gallery" e001_n1_phone_b.jpg --k 2 --all || exit $?
sigedge identify "$gallery" e006_n1_phone_b.jpg --k 2 --all || exit $?
echo
echo "== sigedge detect: signatures on a cheque (pages are generated from the bundled signatures, see pages/)"
out="$(dirname "$gallery")"
sigedge detect ../pages/cheque_e001.jpg --annotate "$out/cheque_annotated.png" --crops "$out/crops" || exit $?
echo
echo "== sigedge verify --page: the cheque against e001's enrolled reference images"
sigedge verify --page ../pages/cheque_e001.jpg e001_n1_paper.jpg e001_n1_ipad.jpg e001_n1_phone_a.jpg
echo "(exit code $?)"
echo
echo "== sigedge identify --page: who signed the contract (two signatures)?"
sigedge identify "$gallery" --page ../pages/contract_both.jpg --k 2 --all || exit $?
echo
echo "== every page in pages/ signed by e001 (examples/find_signed_pages.py, Python API)"
python ../find_signed_pages.py "$gallery" e001 ../pages
echo "(exit code $?)"

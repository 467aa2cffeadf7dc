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

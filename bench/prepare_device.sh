#!/usr/bin/env bash
# Puts what a GPU machine without a package index needs into git-ignored folders of this checkout:
#   .whl/    the ml-collections wheel (the GPU image has jax, flax, optax, scipy, pillow,
#            absl-py and PyYAML, but no ml_collections; EXTRA_WHEELS='absl-py==2.5.1 ...'
#            adds more);
#   .carry/  the real-image .npz (quality run data and FID reference) and the FID Inception
#            packed as float16 (~44 MB instead of 87).
# Run it in the project's virtualenv, then copy the checkout with those two folders to the GPU
# machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
mkdir -p .whl .carry
rm -f .whl/*.whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0 \
  ${EXTRA_WHEELS:-}
DATA=${DATA:-../shared/data/cifar100_classes0-9_1834.npz}
install -m 644 "$DATA" .carry/
# FID Inception: $INCEPTION_WEIGHTS, else shared/data's TorchScript file, else the evaluation
# loader's own search ($VITGAN_INCEPTION_PT, the cache dir).
WEIGHTS=${INCEPTION_WEIGHTS:-}
if [[ -z "$WEIGHTS" && -f ../shared/data/fid_inception_v3_tf.pt ]]; then
  WEIGHTS=../shared/data/fid_inception_v3_tf.pt
fi
if ! "$PYTHON" -m bench.pack_inception ${WEIGHTS:+--weights "$WEIGHTS"}; then
  rm -f .carry/inception_fid_float16.npz
  echo "No FID Inception weights found: the device run will use random weights" \
       "(FID speed timings stay valid; the quality curve is then a plumbing check only)."
fi
du -ch .whl .carry | tail -n 1

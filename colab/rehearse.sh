#!/usr/bin/env bash
# The workshop path on Colab's own package set (`make colab-rehearsal`; WORKSHOP.md has the last report).
#
# Colab runs Python 3.13 with the packages in colab/pip-freeze.gpu.txt. This builds that environment in a
# Debian 13 chroot (Python 3.13 from Debian's packages): the packages the course and its notebooks touch, and
# what they depend on, at Colab's versions (torch 2.11.0 from PyPI, which is the CUDA 13 build: it runs on the
# CPU; Colab's is 2.11.0+cu128 from PyTorch's own index). Then colab/rehearse.py runs the labs' set-up cell
# for real and every lab in the hub profile, inside the chroot. Needs root, debootstrap (installed from Debian
# when missing) and the network to Debian and PyPI; each run downloads about 3 GB (torch and its CUDA
# libraries; the chroot, 6 GB, stays under COLAB_WORK, default out/colab-rehearsal), so `make test` does not run it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=${COLAB_WORK:-$HERE/out/colab-rehearsal}
ROOT=$WORK/root

if [ "$(id -u)" != 0 ]; then
  echo "colab rehearsal: it builds a Debian 13 chroot, which needs root; run it as root (sudo make colab-rehearsal)." >&2
  exit 2
fi
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null \
  || { echo "colab rehearsal: debootstrap is missing and apt-get could not install it." >&2; exit 2; }

mkdir -p "$WORK"
if [ ! -x "$ROOT/usr/bin/python3.13" ]; then
  echo "colab rehearsal: building a Debian 13 (trixie) root with Python 3.13 in $ROOT (a few minutes, once)"
  rm -rf "$ROOT"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates trixie "$ROOT" \
    http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { echo "colab rehearsal: debootstrap failed; see $WORK/debootstrap.log" >&2; exit 1; }
fi

cleanup() { for m in sys dev proc; do umount -l "$ROOT/$m" 2>/dev/null || true; done; }
trap cleanup EXIT
for m in proc dev sys; do mountpoint -q "$ROOT/$m" || mount --bind "/$m" "$ROOT/$m"; done
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's trust store (with a network proxy's CA, where there is one), so pip verifies PyPI as the host does.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
IN_ROOT=(env -i HOME=/root LANG=C.UTF-8 PATH=/venv/bin:/usr/bin:/bin PIP_CERT=/etc/ssl/certs/ca-certificates.crt
  PYDEVD_DISABLE_FILE_VALIDATION=1
  PIP_DISABLE_PIP_VERSION_CHECK=1 ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} ${HTTP_PROXY:+HTTP_PROXY=$HTTP_PROXY})

# The clone's place on Colab, filled with this checkout (its tracked and new files, what `git clone` gives).
rm -rf "$ROOT/content"
mkdir -p "$ROOT/content/peft-course"
(cd "$HERE" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$ROOT/content/peft-course" -xf -

# Colab's versions as pip constraints: pinned lines only, local version labels (+cu128) dropped, and not
# Colab's CUDA 12 stack (nvidia-*, cuda-*): PyPI's torch 2.11.0 brings the CUDA 13 libraries it loads.
grep -E '^[A-Za-z0-9_.-]+==' "$HERE/colab/pip-freeze.gpu.txt" | grep -viE '^(nvidia|cuda)-' \
  | sed -E 's/\+[A-Za-z0-9.]+$//' >"$ROOT/colab-constraints.txt"

# What the labs import and the notebook runner, installed as Colab has them (their dependencies too).
PACKAGES="torch transformers peft accelerate datasets pyarrow tokenizers safetensors huggingface_hub numpy
  matplotlib tqdm nbformat nbclient ipykernel jupyter_client ipython jsonschema packaging"
echo "colab rehearsal: installing Colab's versions into the chroot's /venv"
chroot "$ROOT" "${IN_ROOT[@]}" bash -c "
  set -e
  rm -rf /venv && python3 -m venv /venv
  python -m pip install -q pip==\$(grep '^pip==' /colab-constraints.txt | cut -d= -f3)
  pip install -q -c /colab-constraints.txt $(echo $PACKAGES)
" >"$WORK/install.log" 2>&1 || { echo "colab rehearsal: installing Colab's packages failed; see $WORK/install.log" >&2; exit 1; }

set +e
chroot "$ROOT" "${IN_ROOT[@]}" TQDM_DISABLE=1 python /content/peft-course/colab/rehearse.py /content/report
status=$?
set -e
cp "$ROOT/content/report.md" "$ROOT/content/report.json" "$WORK/" 2>/dev/null || true
echo "colab rehearsal: report in $WORK/report.md"
exit $status

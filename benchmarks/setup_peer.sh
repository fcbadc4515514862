#!/usr/bin/env bash
# Creates benchmarks/.venv-peer: a venv layered over the project's venv that adds only the
# peer, lucidrains' denoising-diffusion-pytorch, so that torch exists once on disk and both
# implementations run on the very same torch build. Never part of the project's dependencies.
#
#   bash benchmarks/setup_peer.sh            # idempotent; BASE_VENV=... to layer over another venv
set -euo pipefail

PEER_VERSION="2.3.4" # the version the figures in benchmarks/README.md were measured with
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
BASE_VENV="${BASE_VENV:-$ROOT/.venv}"
PEER_VENV="$HERE/.venv-peer"

if [[ ! -x "$BASE_VENV/bin/python" ]]; then
    echo "setup_peer: no project venv at $BASE_VENV (run 'make setup' first)" >&2
    exit 1
fi
BASE_SITE="$("$BASE_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# `--system-site-packages` alone is not enough: a venv made from a venv's python points at
# the *base interpreter's* site-packages (pyvenv.cfg `home`), not at the project venv's.
# A .pth that calls site.addsitedir appends the project venv's site-packages (and runs its
# own .pth files, e.g. the editable ddpm_repro install) after the peer venv's own.
"$BASE_VENV/bin/python" -m venv --system-site-packages "$PEER_VENV"
PEER_SITE="$("$PEER_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import site; site.addsitedir('$BASE_SITE')" >"$PEER_SITE/_ddpm_repro_base_venv.pth"

# pip sees the project's torch through the .pth and, with its default only-if-needed
# upgrade strategy, keeps it; the check below fails loudly if a second torch slipped in.
"$PEER_VENV/bin/python" -m pip install --quiet "denoising-diffusion-pytorch==$PEER_VERSION"

"$PEER_VENV/bin/python" - "$BASE_SITE" "$PEER_SITE" <<'PY'
import os
import sys

base_site, peer_site = (os.path.realpath(p) for p in sys.argv[1:3])
import torch  # noqa: E402

import denoising_diffusion_pytorch  # noqa: E402
from importlib.metadata import version  # noqa: E402

torch_dir = os.path.realpath(os.path.dirname(torch.__file__))
if not torch_dir.startswith(base_site + os.sep):
    sys.exit(f"setup_peer: torch imported from {torch_dir}, not from the project venv {base_site}")
if os.path.isdir(os.path.join(peer_site, "torch")):
    sys.exit(f"setup_peer: a second torch was installed into {peer_site}; remove it")
print(
    f"setup_peer: denoising-diffusion-pytorch {version('denoising-diffusion-pytorch')} "
    f"over torch {torch.__version__} from {torch_dir}"
)
PY
du -sh "$PEER_VENV" | sed 's/^/setup_peer: size /'

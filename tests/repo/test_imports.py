"""The core runs where only torch and numpy are installed (a bare GPU machine)."""

import subprocess
import sys

# Everything the MLOps layer brings; the core must import with all of it missing.
NOT_ON_A_BARE_GPU_MACHINE = [
    "mlflow",
    "dvc",
    "pandas",
    "scipy",
    "sklearn",
    "matplotlib",
    "tqdm",
    "yaml",
]


def test_core_imports_with_only_torch_and_numpy():
    code = (
        "import sys\n"
        f"for name in {NOT_ON_A_BARE_GPU_MACHINE!r}: sys.modules[name] = None  # import raises\n"
        "import ddpm_repro.diffusion, ddpm_repro.models, ddpm_repro.training, ddpm_repro.config\n"
        "ddpm_repro.config.config_from_dict({}, cell='cosine-hybrid')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

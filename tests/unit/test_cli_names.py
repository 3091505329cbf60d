"""The torchvision model names the CLI knows without torch (isplit_export/model_list.py) are the installed
torchvision's: regenerate them with ``python scripts/gen_model_list.py`` when this fails."""

from __future__ import annotations

from importlib.metadata import version


def test_the_shipped_model_list_is_the_installed_torchvisions() -> None:
    import torchvision.models
    from torchvision.models import list_models

    from isplit_export.model_list import TORCHVISION_MODELS, TORCHVISION_VERSION

    assert version("torchvision") == TORCHVISION_VERSION
    assert list(TORCHVISION_MODELS) == sorted(list_models(module=torchvision.models))


def test_every_listed_model_is_accepted_and_a_near_miss_named() -> None:
    from isplit_export.cli_names import check_model, known_model
    from isplit_export.model_list import TORCHVISION_MODELS

    assert all(known_model(m) for m in TORCHVISION_MODELS)
    assert known_model("efficientnet_lite0") and known_model("isplit_export.zoo:digits_cnn")
    assert known_model("mobilenet_v9") is False
    assert check_model("resnet50") == "resnet50"


def test_models_lists_the_same_names_as_the_api_without_torch() -> None:
    """``isplit-export models`` prints the names :func:`isplit_export.models.available_models` accepts,
    from the shipped list: no torch imported."""
    import subprocess
    import sys

    from isplit_export.models import available_models

    code = (
        "import sys\n"
        "from isplit_export.cli import main\n"
        "rc = main(['models'])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "sys.exit(rc)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == available_models()

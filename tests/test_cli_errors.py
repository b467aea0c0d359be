"""What a new user sees when a command line or a config is wrong: one line naming the option
or the file, the key and the value, never a traceback, never a secret (a QA pass, issue-free).

Each case runs the real command on the real demo models and video.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import yaml

from conftest import DEMO_VIDEO, DET, run_cli

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

HTTP_TYPO_SECRET = "HttpT0kTypo9"  # noqa: S105
TLS_TYPO_SECRET = "TlsKeyPassQ7"  # noqa: S105


def _config(tmp_path: Path, name: str, **sections: object) -> Path:
    data = {
        "cameras": [{"name": "demo", "source": str(DEMO_VIDEO)}],
        "models": [{"name": "det", "path": str(DET), "task": "detect"}],
        **sections,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _clean(res: subprocess.CompletedProcess[str]) -> str:
    """stderr of a failed command, checked to be an error line and not a traceback."""
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    return res.stderr


@pytest.mark.parametrize(
    ("where", "section", "secret"),
    [
        # http holds `token`: a misspelled `tokn` is probably the token
        ("http.tokn", {"http": {"token": "abc123", "tokn": HTTP_TYPO_SECRET}}, HTTP_TYPO_SECRET),
        # under sinks.mqtt (which holds the password), at any depth
        (
            "sinks.mqtt.tls.keypass",
            {
                "sinks": {
                    "mqtt": {"url": "mqtts://127.0.0.1:8883", "tls": {"keypass": TLS_TYPO_SECRET}}
                }
            },
            TLS_TYPO_SECRET,
        ),
    ],
)
def test_misspelled_key_in_a_secret_section_is_masked(
    tmp_path: Path, where: str, section: dict[str, object], secret: str
):
    path = _config(tmp_path, "typo.yaml", **section)
    for cmd in (("check-config", "--no-models", str(path)), ("run", "-c", str(path))):
        err = _clean(run_cli(*cmd))
        assert f"{where} = '***': unknown key" in err, err
        assert secret not in err, err


def test_misspelled_key_elsewhere_shows_its_value(tmp_path: Path):
    """Masking is for sections with secrets: elsewhere the value helps find the mistake."""
    path = _config(tmp_path, "typo.yaml", logging={"levl": "debug"})
    err = _clean(run_cli("check-config", "--no-models", str(path)))
    assert "logging.levl = 'debug': unknown key" in err, err


def test_yaml_error_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("cameras:\n  - name: a\n    source: [x\n", encoding="utf-8")
    err = _clean(run_cli("check-config", str(path)))
    assert f"{path}: not valid YAML" in err, err
    assert 'in "broken.yaml", line' in err, err
    assert "<unicode string>" not in err, err

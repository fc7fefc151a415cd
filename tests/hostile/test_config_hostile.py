"""Config that would leak or stall: secrets inline in URLs and headers are refused with
their key path; an oversized file is refused before it is parsed."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ccwatch.cli import cli
from ccwatch.config_errors import MAX_CONFIG_BYTES


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["-c", str(path), "check-config"])
    return result.exit_code, result.output


def test_a_password_in_an_upstream_url_is_refused_with_its_path(tmp_path: Path) -> None:
    code, out = check(
        tmp_path,
        "site: blr1\n"
        "tickets:\n"
        "  - {type: webhook, url: 'https://ccwatch:S3cretPass@hooks.example.com/in'}\n"
        "  - {type: alertmanager, url: 'http://am:Pw0rd@127.0.0.1:9093'}\n",
    )
    assert code == 2
    assert "tickets -> 1 -> url: a password in the URL is never written inline" in out
    assert "tickets -> 2 -> url: a password in the URL is never written inline" in out
    assert "S3cretPass" not in out and "Pw0rd" not in out


def test_secret_headers_are_refused_and_harmless_ones_kept(tmp_path: Path) -> None:
    base = "site: blr1\ntickets:\n  - type: webhook\n    url: https://hooks.example.com/in\n"
    for header in ("Authorization", "X-Api-Key", "X-Auth-Token", "PRIVATE-TOKEN", "Cookie"):
        code, out = check(tmp_path, base + f"    headers: {{{header}: abc123}}\n")
        assert code == 2, header
        assert f"tickets -> 1 -> headers: header '{header}' carries a secret" in out
        assert "abc123" not in out
    code, out = check(tmp_path, base + "    headers: {X-Team: noc, X-Site: blr1}\n")
    assert code == 0, out


def test_an_oversized_config_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    padding = "# " + "x" * 98 + "\n"
    text = "site: blr1\n" + padding * (MAX_CONFIG_BYTES // len(padding) + 10)
    code, out = check(tmp_path, text)
    assert code == 2
    assert "a config file may be at most 1,000,000" in out

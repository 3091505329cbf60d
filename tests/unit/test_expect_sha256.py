"""``--expect-sha256``: one option definition (``cli_options.ExpectShaOpt``) on every command that reads a bundle."""

from __future__ import annotations

import inspect
import typing

import pytest

from isplit_export import cli_bundle, cli_options, cli_serving
from isplit_export.errors import BadInputError
from isplit_export.options_serving import RunOptions, ServeOptions


@pytest.mark.parametrize(
    "command",
    [
        cli_bundle.verify_cmd,
        cli_bundle.plan_cmd,
        cli_bundle.build_engines_cmd,
        cli_serving.serve_cmd,
        cli_serving.run_cmd,
    ],
)
def test_every_bundle_reader_takes_the_one_expect_sha256_option(command: typing.Any) -> None:
    hints = typing.get_type_hints(command, include_extras=True)
    option = typing.get_args(hints["expect_sha256"])[1]
    assert (
        option is typing.get_args(cli_options.ExpectShaOpt)[1]
    )  # the same typer.Option object: one definition
    assert "--expect-sha256" in (
        option.default,
        *option.param_decls,
    )  # typer keeps a str first argument as default
    assert inspect.signature(command).parameters["expect_sha256"].default is None


def test_serve_and_run_options_carry_the_pin_and_the_contract_checks_it() -> None:
    from isplit_export.contract import check_sha256_text

    assert ServeOptions(expect_sha256="A" * 64).expect_sha256 == "A" * 64
    assert RunOptions(expect_sha256=None).expect_sha256 is None
    with pytest.raises(BadInputError, match="--expect-sha256 'abc' is not a sha256"):
        check_sha256_text("abc", "--expect-sha256")

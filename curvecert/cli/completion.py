"""`curvecert completion SHELL`: print the shell completion script for bash, zsh or fish.

click generates the scripts; this command only saves users from remembering the
`_CURVECERT_COMPLETE=<shell>_source curvecert` incantation.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

__all__ = ["completion"]


@click.command(epilog="""\b
Examples:
  curvecert completion bash > ~/.local/share/bash-completion/completions/curvecert
  curvecert completion zsh  > "${fpath[1]}/_curvecert"
  curvecert completion fish > ~/.config/fish/completions/curvecert.fish
  eval "$(curvecert completion bash)"      # just this shell
""")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish) on stdout."""
    from curvecert.cli import cli

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion support for {shell}")
    comp = cls(cli, {}, "curvecert", "_CURVECERT_COMPLETE")
    click.echo(comp.source())

"""`citybrain traffic`: import networks, run controllers on scenarios, benchmark them."""

from __future__ import annotations

import typer

traffic_app = typer.Typer(help="治堵: the SUMO digital twin, signal controllers and their benchmark.",
                          no_args_is_help=True)

"""Flags shared by ``agreid evaluate`` and ``agreid ranks`` (re-ranking); not a subcommand (leading ``_``)."""

from __future__ import annotations

import argparse


def add_rerank_args(p: argparse.ArgumentParser) -> None:
    """``--rerank`` (off by default) and its k1 / k2 / lambda parameters."""
    g = p.add_argument_group("k-reciprocal re-ranking (Zhong et al., CVPR 2017; off unless --rerank)")
    g.add_argument("--rerank", action="store_true",
                   help="re-rank with k-reciprocal encoding; results are labelled '<mode>+rerank', never mixed with "
                        "plain ones")
    g.add_argument("--k1", type=int, default=20, help="k-reciprocal neighbours (default 20)")
    g.add_argument("--k2", type=int, default=6, help="neighbours of the local query expansion (default 6; 1 = none)")
    g.add_argument("--lambda", dest="lambda_value", type=float, default=0.3,
                   help="weight of the original distance in the final distance (default 0.3)")


def rerank_params(args: argparse.Namespace):
    """``RerankParams`` from parsed args, or None when ``--rerank`` is off (a bad value is a CLIError)."""
    if not getattr(args, "rerank", False):
        return None
    from agreid_kit.cli import CLIError
    from agreid_kit.rerank import RerankParams

    try:
        return RerankParams(args.k1, args.k2, args.lambda_value).check()
    except ValueError as e:
        raise CLIError(f"--k1/--k2/--lambda: {e}") from None

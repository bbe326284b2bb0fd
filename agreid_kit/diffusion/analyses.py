"""Stage-2 analyses: each returns its data and a plotly figure.

- ``timestep_tradeoff``: accuracy and measured latency per number of sampling steps tau (Figs. 4/5/8/9);
- ``view_condition_similarity``: instance view tokens vs view centres, and instance vs instance (Fig. 14);
- ``ablation``: retrain stage 2 per variant (VRD mechanism/location, learner depth, ID layers; Fig. 10,
  Tab. 9, Fig. 12) or regenerate per guidance scale, and score each.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from agreid_kit import VIEW_NAMES
from agreid_kit.data.records import DatasetSplit
from agreid_kit.features import FeatureSet
from agreid_kit.run import Run


def _splits(run_dir: str | Path, protocols: Sequence[str],
            splits: dict[str, DatasetSplit] | None) -> dict[str, DatasetSplit]:
    out = {}
    for p in protocols:
        if splits and p in splits:
            out[p] = splits[p]
        else:
            from agreid_kit.engine.run import load_run

            out[p] = load_run(run_dir).load_split(p)
    return out


def score(fs: FeatureSet, splits: dict[str, DatasetSplit], modes: Sequence[str]) -> list[dict[str, Any]]:
    """Rows {protocol, mode, rank1, mAP, mINP, ...} for every protocol x mode."""
    from agreid_kit.engine.evaluate import metrics_dict
    from agreid_kit.features import evaluate_featureset

    rows = []
    for protocol, split in splits.items():
        for mode in modes:
            rows.append({"protocol": protocol, "mode": mode, **metrics_dict(evaluate_featureset(fs, split, mode=mode))})
    return rows


def timestep_tradeoff(
    run_dir: str | Path,
    taus: Sequence[int] = (1, 2, 5, 10, 20, 50),
    protocols: Sequence[str] = ("ALL",),
    modes: Sequence[str] = ("real+gen",),
    guidance: float = 2.0,
    sampler: str = "ddim",
    timestep_spacing: str = "leading",
    seed: int = 0,
    batch_size: int = 512,
    device: str = "auto",
    splits: dict[str, DatasetSplit] | None = None,
    progress: bool = True,
):
    """(DataFrame[tau, protocol, mode, rank1, mAP, mINP, sec_per_1000], Figure) over ``taus``.

    Seconds are wall-clock generation time (all views, both CFG branches) per 1,000 test images,
    measured in this process; the features are not written to the run.
    """
    import pandas as pd

    from agreid_kit.diffusion.sample import generate_features

    if not taus or min(taus) < 1:
        raise ValueError(f"taus must be a non-empty list of integers >= 1, got {list(taus)}")
    sp = _splits(run_dir, protocols, splits)
    rows = []
    for tau in taus:
        fs = generate_features(run_dir, tau=int(tau), guidance=guidance, sampler=sampler,
                               timestep_spacing=timestep_spacing,
                               seed=seed, batch_size=batch_size, device=device, save=False, progress=progress)
        gen = fs.meta["generation"]
        for r in score(fs, sp, modes):
            rows.append({"tau": int(tau), **r, "sec_per_1000": gen["seconds_per_1000"], "sampler": sampler,
                         "timestep_spacing": timestep_spacing})
    df = pd.DataFrame(rows)
    return df, tradeoff_figure(df)


def tradeoff_figure(df):
    """Accuracy (left axis) and seconds per 1,000 images (right axis) against tau."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for (protocol, mode), part in df.groupby(["protocol", "mode"], sort=False):
        part = part.sort_values("tau")
        for metric, dash in (("rank1", "solid"), ("mAP", "dash"), ("mINP", "dot")):
            fig.add_trace(go.Scatter(x=part["tau"], y=100 * part[metric], mode="lines+markers", line=dict(dash=dash),
                                     name=f"{protocol} {mode} {metric}"), secondary_y=False)
    lat = df.drop_duplicates("tau").sort_values("tau")
    fig.add_trace(go.Scatter(x=lat["tau"], y=lat["sec_per_1000"], mode="lines+markers", name="s / 1,000 images",
                             line=dict(color="black", width=3)), secondary_y=True)
    taus = sorted(df["tau"].unique().tolist())
    fig.update_xaxes(title_text="sampling steps tau", type="log", tickvals=taus, ticktext=[str(t) for t in taus])
    fig.update_yaxes(title_text="accuracy (%)", secondary_y=False)
    fig.update_yaxes(title_text="seconds per 1,000 images", secondary_y=True)
    fig.update_layout(title="SD-ReID timestep trade-off: accuracy vs generation cost",
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    return fig


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(a.float(), dim=1) @ torch.nn.functional.normalize(b.float(), dim=1).T


def view_condition_similarity(fs: FeatureSet, max_instances: int = 300, seed: int = 0, space: str = "raw"):
    """Cosine similarity of instance view tokens to every view centre, per instance view (Fig. 14).

    ``space``: ``raw`` (the tokens as stage 1 emits them) or ``standardised`` (per dimension, with the
    mean and std of this FeatureSet's tokens: the space stage 2's conditions live in, where a shared
    constant component no longer hides how the views differ).

    Returns ``({"to_centres": DataFrame[view, centre, cosine], "instance_matrix": (M, M) array,
    "instance_views": (M,) array}, Figure)``; the instance map uses up to ``max_instances`` tokens
    sampled evenly per view and sorted by view.
    """
    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if "view_token" not in fs.extras or "view_centres" not in fs.globals:
        raise ValueError(f"FeatureSet {fs.split!r} needs the sdreid extra 'view_token' and global 'view_centres'")
    if space not in ("raw", "standardised"):
        raise ValueError(f"space must be 'raw' or 'standardised', got {space!r}")
    tokens, centres, views = fs.extras["view_token"].float(), fs.globals["view_centres"].float(), fs.views
    if space == "standardised":
        from agreid_kit.diffusion.model import moments

        mean, std = (m.float() for m in moments(tokens))
        tokens, centres = (tokens - mean) / std, (centres - mean) / std
    sims = _cosine(tokens, centres)  # (N, V)
    rows = [
        {"view": VIEW_NAMES[int(v)], "centre": VIEW_NAMES[c], "cosine": float(s)}
        for v, row in zip(views.tolist(), sims.tolist()) for c, s in enumerate(row)
    ]
    df = pd.DataFrame(rows)
    g = torch.Generator().manual_seed(seed)
    present = sorted(set(views.tolist()))
    per = max(1, max_instances // max(len(present), 1))
    pick = []
    for v in present:
        idx = torch.nonzero(views == v).flatten()
        pick.append(idx[torch.randperm(len(idx), generator=g)[:per]].sort().values)
    pick = torch.cat(pick)
    mat = _cosine(tokens[pick], tokens[pick]).numpy()
    inst_views = views[pick].numpy()

    fig = make_subplots(rows=1, cols=2, subplot_titles=("instance token vs view centre", "instance vs instance"),
                        column_widths=[0.45, 0.55])
    for c in range(centres.shape[0]):
        part = df[df["centre"] == VIEW_NAMES[c]]
        fig.add_trace(go.Violin(x=part["view"], y=part["cosine"], name=f"centre {VIEW_NAMES[c]}", box_visible=True,
                                meanline_visible=True, legendgroup=VIEW_NAMES[c]), row=1, col=1)
    labels = [f"{VIEW_NAMES[v]} #{i}" for i, v in enumerate(inst_views)]
    fig.add_trace(go.Heatmap(z=mat, x=labels, y=labels, colorscale="RdBu", zmid=0,
                             colorbar=dict(title="cos")), row=1, col=2)
    fig.update_layout(violinmode="group", title=f"View-condition similarity (instance view tokens, {space})")
    fig.update_xaxes(title_text="instance view", row=1, col=1)
    fig.update_yaxes(title_text="cosine similarity", row=1, col=1)
    fig.update_xaxes(showticklabels=False, row=1, col=2)
    fig.update_yaxes(showticklabels=False, row=1, col=2)
    return {"to_centres": df, "instance_matrix": np.asarray(mat), "instance_views": np.asarray(inst_views)}, fig


# Standard ablation studies: name -> (kind, default values). "model" studies retrain stage 2 with a
# model option changed; "guidance" regenerates one trained run at each scale.
ABLATIONS: dict[str, tuple[str, list[Any]]] = {
    "vrd_mechanism": ("model", ["conv", "pool", "proj"]),
    "vrd_location": ("model", ["none", "down", "up", "both"]),
    "learner_depth": ("model", [0, 1, 2]),
    "id_layers": ("model", [1, 2, 3, "all"]),  # the last K ID-condition tokens (Fig. 10)
    "guidance": ("guidance", [1.0, 1.5, 2.0, 3.0, 5.0]),
}


def ablation(
    study: str,
    base: "Stage2Config | str | Path",  # noqa: F821 - a config to vary, or (guidance) a trained run dir
    values: Sequence[Any] | None = None,
    out_root: str | Path | None = None,
    protocols: Sequence[str] = ("ALL",),
    modes: Sequence[str] = ("real+gen",),
    tau: int = 5,
    guidance: float = 2.0,
    splits: dict[str, DatasetSplit] | None = None,
    progress: bool = True,
):
    """(DataFrame[study value, protocol, mode, rank1, mAP, mINP, sec_per_1000], Figure).

    Model studies train one stage-2 run per value under ``out_root/<study>=<value>`` (resumable;
    an existing finished run is reused) from ``base`` (a ``Stage2Config``); ``guidance`` regenerates
    the trained run ``base`` at each scale without retraining.
    """
    import pandas as pd
    import plotly.express as px

    from agreid_kit.diffusion.config import Stage2Config
    from agreid_kit.diffusion.sample import generate_features
    from agreid_kit.diffusion.train import train_stage2

    if study not in ABLATIONS:
        raise ValueError(f"unknown ablation {study!r}; expected one of {sorted(ABLATIONS)}")
    kind, defaults = ABLATIONS[study]
    values = list(values) if values is not None else defaults
    rows = []
    for value in values:
        if kind == "guidance":
            run_dir = Path(base)
            fs = generate_features(run_dir, tau=tau, guidance=float(value), save=False, progress=progress)
        else:
            if not isinstance(base, Stage2Config):
                raise ValueError(f"ablation {study!r} retrains stage 2: pass a Stage2Config as base, got "
                                 f"{type(base).__name__}")
            if out_root is None:
                raise ValueError(f"ablation {study!r} needs out_root (a folder for one stage-2 run per value)")
            model = dict(base.model)
            if study == "id_layers":
                model["id_layers"] = None if value == "all" else list(range(-int(value), 0))
            else:
                model[study] = value
            run_dir = Path(out_root) / f"{study}={value}"
            cfg = replace(base, out=str(run_dir), model=model, tau=tau, guidance=guidance, generate_after=True)
            train_stage2(cfg, progress=progress)
            fs = FeatureSet.load(Run(run_dir).features_path("test"))
        sp = _splits(run_dir, protocols, splits)
        for r in score(fs, sp, modes):
            rows.append({study: str(value), **r, "sec_per_1000": fs.meta.get("generation", {}).get("seconds_per_1000")})
    df = pd.DataFrame(rows)
    long = df.melt(id_vars=[study, "protocol", "mode"], value_vars=["rank1", "mAP", "mINP"], var_name="metric",
                   value_name="score")
    long["score"] = 100 * long["score"]
    fig = px.bar(long, x=study, y="score", color="metric", barmode="group", facet_col="protocol",
                 hover_data=["mode"], title=f"SD-ReID stage-2 ablation: {study}")
    fig.update_yaxes(title_text="%")
    return df, fig


def view_token_measures(stage1_run: str | Path) -> dict[str, Any]:
    """How much view the stage-1 view conditions carry (what stage 2 receives), on the run's test images.

    - ``head_accuracy``: the stage-1 view head's accuracy on the instance view tokens;
    - ``centre_cosine``: cosine between the memory centres of the views (raw, as stage 2's context
      receives them before its standardisation; and standardised);
    - ``separation``: mean cosine of an instance token to its own view's centre minus to the other
      view's centre (raw and standardised), and ``instance_separation``: mean cosine between
      instances of the same view minus between instances of different views (Fig. 14's matrix);
    - ``probe_accuracy``: a logistic-regression probe fitted on the train split's view tokens,
      scored on the test tokens (chance = the majority view's share, given as ``chance``).
    """
    import numpy as np

    from agreid_kit.diffusion.model import moments
    from agreid_kit.engine.run import load_run

    run = load_run(stage1_run)
    test = FeatureSet.load(run.features_path("test"))
    if "view_token" not in test.extras or "view_centres" not in test.globals:
        raise ValueError(f"{stage1_run}: its test FeatureSet has no view tokens (is it an sdreid stage-1 run?)")
    tokens, centres, views = test.extras["view_token"].float(), test.globals["view_centres"].float(), test.views
    model = run.model
    with torch.no_grad():
        _, logits = model.view_head(tokens)
    out: dict[str, Any] = {"head_accuracy": float((logits.argmax(1) == views).float().mean())}
    counts = torch.bincount(views, minlength=centres.shape[0]).float()
    out["chance"] = float(counts.max() / counts.sum())
    mean, std = (m.float() for m in moments(tokens))
    for space, (tok, cen) in {"raw": (tokens, centres),
                              "standardised": ((tokens - mean) / std, (centres - mean) / std)}.items():
        out[f"centre_cosine_{space}"] = float(_cosine(cen[:1], cen[1:2])[0, 0]) if cen.shape[0] > 1 else None
        sims = _cosine(tok, cen)  # (N, V)
        own = sims.gather(1, views[:, None]).squeeze(1)
        other = (sims.sum(1) - own) / max(1, cen.shape[0] - 1)
        out[f"separation_{space}"] = float((own - other).mean())
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(tok), generator=g)[:1000]
        inst = _cosine(tok[pick], tok[pick])
        same = views[pick][:, None] == views[pick][None, :]
        off = ~torch.eye(len(pick), dtype=torch.bool)
        out[f"instance_separation_{space}"] = float(inst[same & off].mean() - inst[~same].mean())
    train_path = run.features_path("train")
    if train_path.with_suffix(".json").is_file():
        from sklearn.linear_model import LogisticRegression

        train = FeatureSet.load(train_path)
        if "view_token" in train.extras and len(set(train.views.tolist())) > 1:
            x_tr = ((train.extras["view_token"].float() - mean) / std).numpy()
            probe = LogisticRegression(max_iter=2000).fit(x_tr, train.views.numpy())
            pred = probe.predict(((tokens - mean) / std).numpy())
            out["probe_accuracy"] = float(np.mean(pred == views.numpy()))
    return out


def generated_view_probe(stage2_run: str | Path) -> dict[str, Any]:
    """Whether ``gen:<view>`` features are view-specific: a view probe fitted on real train features.

    A logistic regression learns the view from stage 1's real retrieval features of the train
    split; it is then asked which view each generated feature looks like. ``accuracy[v]`` is the
    share of ``gen:v`` features it assigns to view ``v`` (1.0: the generated features carry their
    target view; about the share of v among real images: they do not). ``real_accuracy`` is the
    probe on the real test features, for scale.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    run = Run(stage2_run)
    stage1 = Run(run.config.stage1)
    train = FeatureSet.load(stage1.features_path("train"))
    test = FeatureSet.load(run.features_path("test"))
    gen_views = test.generated_views()
    if not gen_views:
        raise ValueError(f"{run}: no generated features (run `agreid generate {run}`)")
    norm = lambda x: torch.nn.functional.normalize(x.float(), dim=1).numpy()  # noqa: E731 - cosine space
    probe = LogisticRegression(max_iter=2000).fit(norm(train.features), train.views.numpy())
    out: dict[str, Any] = {"real_accuracy": float(np.mean(probe.predict(norm(test.features)) == test.views.numpy())),
                           "accuracy": {}}
    for v in gen_views:
        pred = probe.predict(norm(test.extras[f"gen:{v}"]))
        out["accuracy"][VIEW_NAMES[v]] = float(np.mean(pred == v))
    return out


def stage2_validation(stage2_run: str | Path, taus: Sequence[int] = (5,), guidances: Sequence[float] = (2.0,),
                      seed: int = 0, device: str = "cpu", protocols: Sequence[str] = ("ALL", "A<->G")):
    """Validation mAP / Rank-1 of ``real``, ``gen:all`` and ``real+gen`` of a trained stage-2 run on the identities
    its stage-1 run held out, for each sampling setting (tau, guidance): how settings are chosen without the
    test split. Returns a DataFrame ``tau, guidance`` and the :func:`validate_stage2` columns (fractions):
    ``val_<mode>_mAP`` on ALL, ``val_<protocol>_<mode>_mAP`` for the other ``protocols``."""
    import pandas as pd

    from agreid_kit.diffusion.loading import load_stage1, load_stage2
    from agreid_kit.diffusion.train import stage2_validation_rows, validate_stage2

    model, run_cfg = load_stage2(stage2_run, device=device)
    s1 = load_stage1(run_cfg["stage1"])
    _, val_split, val_rows = stage2_validation_rows(s1.train)
    if val_split is None:
        raise ValueError(f"{run_cfg['stage1']}: its stage-1 run held out no validation identities (val_fraction 0)")
    val_fs = s1.train.subset(val_rows)
    rows = []
    for tau in taus:
        for w in guidances:
            m = validate_stage2(model, val_fs, val_split, int(tau), float(w), seed,
                                int(run_cfg["num_train_timesteps"]), device, protocols)
            rows.append({"tau": int(tau), "guidance": float(w), **m})
    return pd.DataFrame(rows)

r"""`gearwatch train keygen|quality|fit|evaluate|publish`.

    gearwatch train keygen --out keys/
    gearwatch train quality --data hist.csv --asset-class centrifugal_pump --out reports/
    gearwatch train fit --data hist.csv --asset-class centrifugal_pump \
        --signing-key keys/gearwatch.key --out pump.gwb --registry registry/
    gearwatch train evaluate --bundle pump.gwb --trusted-key keys/gearwatch.pub \
        --data labelled.csv --labels labels.csv --out reports/
    gearwatch train publish --bundle pump.gwb --trusted-key keys/ --registry registry/ \
        --mqtt-host localhost
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from models.schema import AssetSchema


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("history")
    g.add_argument("--data", help="CSV or Parquet file with history")
    g.add_argument("--time-col", default="timestamp", help="timestamp column (default timestamp)")
    g.add_argument("--time-unit", default="auto", choices=["auto", "iso", "s", "ms", "us", "ns"],
                   help="RFC 3339 strings or epoch numbers (auto guesses the epoch unit)")
    g.add_argument("--index-period", type=float, metavar="S",
                   help="the time column is a sample index; time = index x S seconds")
    g.add_argument("--asset-col", help="column naming the asset (default: one asset)")
    g.add_argument("--label-col", help="column with 1 where a fault is labelled")
    g.add_argument("--labels", help="labels CSV: asset,start,end[,fault]")
    g.add_argument("--assets", type=_csv_list, default=[], help="only these assets (a,b,c)")
    g.add_argument("--ffill-limit", type=int, default=3,
                   help="forward-fill gaps up to this many periods (default 3)")
    g.add_argument("--resample", type=float, metavar="S",
                   help="resample to S seconds (default: the schema's sample period)")
    i = p.add_argument_group("InfluxDB (instead of --data; needs a schema)")
    i.add_argument("--influx-url", help="e.g. http://localhost:8086")
    i.add_argument("--influx-db", help="v1 database (InfluxQL)")
    i.add_argument("--influx-user")
    i.add_argument("--influx-password")
    i.add_argument("--influx-org", help="v2 organisation (Flux)")
    i.add_argument("--influx-bucket", help="v2 bucket")
    i.add_argument("--influx-token", help="v2 token")
    i.add_argument("--start", help="RFC 3339 start of the history")
    i.add_argument("--end", help="RFC 3339 end of the history")


def add_schema_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("schema")
    g.add_argument("--schema", help="schema JSON file (AssetSchema.to_dict())")
    g.add_argument("--asset-class", help="built-in class, or the name for --schema-from-columns")
    g.add_argument("--schema-from-columns", action="store_true",
                   help="sensors = every column but time/asset/label (unbounded ranges)")
    g.add_argument("--exclude-cols", type=_csv_list, default=[], help="columns that are no sensor")
    g.add_argument("--period", type=float, help="sample period in seconds")
    g.add_argument("--window", type=int, help="window length in samples")
    g.add_argument("--off-condition", help="e.g. 'speed_rpm<100': rows never learned from")


def schema_changes(schema: AssetSchema, **kw: Any) -> AssetSchema:
    return replace(schema, _index={}, **kw)


def resolve_schema(args: argparse.Namespace, columns: list[str] | None) -> AssetSchema:
    from models.catalog import BUILTIN_CLASSES
    from trainer.history import DataError, parse_off_condition, schema_from_columns

    if args.schema:
        try:
            schema = AssetSchema.from_dict(json.loads(Path(args.schema).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{args.schema}: not a schema JSON file ({e})") from e
    elif args.schema_from_columns:
        if columns is None:
            raise DataError("--schema-from-columns needs --data (a file with columns)")
        skip = {args.time_col, args.asset_col, args.label_col, *args.exclude_cols}
        sensors = [c for c in columns if c not in skip]
        schema = schema_from_columns(args.asset_class or "custom", sensors,
                                     args.period or 1.0, args.window or 30)
    elif args.asset_class in BUILTIN_CLASSES:
        schema = BUILTIN_CLASSES[args.asset_class]
    else:
        raise DataError(
            f"unknown asset class {args.asset_class!r}: use one of {sorted(BUILTIN_CLASSES)}, "
            "--schema FILE.json, or --schema-from-columns"
        )
    if args.period:
        schema = schema_changes(schema, sample_period_s=args.period)
    if args.window:
        schema = schema_changes(schema, window=args.window)
    if args.off_condition:
        schema = schema_changes(schema, off_condition=parse_off_condition(args.off_condition))
    off = schema.off_condition
    if off is not None and off.sensor not in schema.sensor_names:
        raise DataError(f"off condition sensor {off.sensor!r} is not a sensor of the schema")
    return schema


def load_history(args: argparse.Namespace, schema_fixed: AssetSchema | None = None
                 ) -> tuple[Any, AssetSchema]:
    """(frame in file order, schema) from --data or InfluxDB, labels applied, assets filtered."""
    from trainer.history import DataError, TableSpec, apply_labels, load_labels, read_raw, to_frame

    spec = TableSpec(args.time_col, args.time_unit, args.index_period, args.asset_col,
                     args.label_col)
    if args.data:
        raw = read_raw(args.data)
        if args.assets and args.asset_col in raw.columns:
            raw = raw[raw[args.asset_col].astype(str).isin(args.assets)]
        schema = schema_fixed or resolve_schema(args, [str(c) for c in raw.columns])
        frame = to_frame(raw, spec, schema.sensor_names, source=args.data)
    elif args.influx_url:
        schema = schema_fixed or resolve_schema(args, None)
        if not (args.start and args.end):
            raise DataError("InfluxDB history needs --start and --end (RFC 3339)")
        if args.influx_db:
            from trainer.influx import load_influx_v1

            frame = load_influx_v1(args.influx_url, args.influx_db, schema.asset_class,
                                   schema.sensor_names, args.start, args.end, args.assets,
                                   args.influx_user, args.influx_password)
        elif args.influx_bucket and args.influx_org and args.influx_token:
            from trainer.influx import load_influx_v2

            frame = load_influx_v2(args.influx_url, args.influx_token, args.influx_org,
                                   args.influx_bucket, schema.asset_class, schema.sensor_names,
                                   args.start, args.end, args.assets)
        else:
            raise DataError("InfluxDB needs --influx-db (v1) or --influx-org, "
                            "--influx-bucket and --influx-token (v2)")
    else:
        raise DataError("no history given: pass --data FILE or --influx-url ...")
    if args.labels:
        frame = apply_labels(frame, load_labels(args.labels))
    if frame.empty:
        raise DataError("the history is empty after filtering (check --assets)")
    return frame, schema


def cmd_keygen(args: argparse.Namespace) -> int:
    from models.bundle import key_id, load_private_key, save_keypair

    priv, pub = save_keypair(args.out, args.name)
    print(f"wrote {priv} (keep secret) and {pub} (give to agents); key id "
          f"{key_id(load_private_key(priv).public_key())}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from trainer.quality import quality_report, render_text

    frame, schema = load_history(args)
    report = quality_report(frame, schema, args.gap_factor)
    text = render_text(report)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "quality.json").write_text(json.dumps(report, indent=1))
        (out / "quality.txt").write_text(text + "\n")
        print(f"wrote {out / 'quality.json'} and {out / 'quality.txt'}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from models.bundle import build_bundle, load_bundle, load_private_key, write_to_registry
    from trainer.fit import FitOptions, fit
    from trainer.history import ts_ns
    from trainer.preprocess import regularize
    from trainer.quality import quality_report, render_text

    key = load_private_key(args.signing_key)
    frame, schema = load_history(args)
    report = quality_report(frame, schema)
    print(render_text(report), file=sys.stderr)
    drop = set(args.drop) | (set(report["recommended_drop"]) if args.drop_recommended else set())
    if drop:
        schema = schema_changes(schema, sensors=tuple(
            s for s in schema.sensors if s.name not in drop))
        print(f"dropping sensors {sorted(drop)}", file=sys.stderr)
    clean = regularize(frame, schema, args.resample, args.ffill_limit)
    opts = FitOptions(hidden=tuple(args.hidden), latent=args.latent,
                      score_steps=args.score_steps, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                      val_frac=args.val_frac, calib_frac=args.calib_frac, device=args.device,
                      seed=args.seed, progress=not args.quiet, river=args.river)
    res = fit(clean, schema, opts)
    t = ts_ns(frame["ts"])
    import pandas as pd

    info = {
        **res.info,
        "training_data": {
            "source": args.data or args.influx_url,
            "start": str(pd.Timestamp(int(t.min()), tz="UTC")),
            "end": str(pd.Timestamp(int(t.max()), tz="UTC")),
            "rows": len(frame), "assets": sorted(frame["asset"].unique().tolist()),
        },
        "data_quality": {"summary": report["summary"], "dataset": report["dataset"],
                         "recommended_drop": report["recommended_drop"],
                         "dropped": sorted(drop)},
        "fit_history": res.history,
    }
    blob = build_bundle(schema, res.model.cfg, res.normalizer, res.model.state_dict(),
                        res.calibrator, key, river_state=res.river_state, info=info)
    bundle = load_bundle(blob, key.public_key())  # what an agent would accept
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    print(f"wrote {out}: {bundle.asset_class} version {bundle.version}, "
          f"{info['training']['epochs_run']} epochs, val loss "
          f"{info['training']['best_val_loss']:.4f}")
    if args.registry:
        print(f"registered {write_to_registry(args.registry, blob)}")
    return 0


def _trusted(paths: list[str]) -> Any:
    from models.bundle import BundleError, load_trusted_keys

    keys = load_trusted_keys(paths)
    if not keys:
        raise BundleError(f"no public keys found in {paths}")
    return keys


def cmd_evaluate(args: argparse.Namespace) -> int:
    from models.bundle import load_bundle
    from trainer.evaluate import EventRule, evaluate, score_frame
    from trainer.preprocess import regularize
    from trainer.report import render_html

    bundle = load_bundle(Path(args.bundle).read_bytes(), _trusted(args.trusted_key))
    frame, schema = load_history(args, schema_fixed=bundle.schema)
    clean = regularize(frame, schema, args.resample, args.ffill_limit)
    rule = EventRule(args.open_at, args.close_below, args.min_duration)
    scores = score_frame(bundle, clean, rule, args.device)
    metrics = evaluate(scores, rule, args.exclude_from_summary)
    metrics["bundle"] = {"asset_class": bundle.asset_class, "version": bundle.version}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    html = render_html(metrics, scores, list(schema.sensor_names), rule,
                       f"gearwatch evaluation: {bundle.asset_class} {bundle.version}")
    (out / "report.html").write_text(html)
    print(format_table(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")
    return 0


def format_table(metrics: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return "   -  " if x is None else f"{x:6.3f}"

    lines = [f"{'asset':>12} {'F1':>6} {'FAR':>6} {'MAR':>6} {'found':>6} {'false_ev':>8}"]
    rows = list(metrics["per_asset"].items())
    rows += [(k, v) for k, v in metrics.items() if k.startswith("overall")]
    for name, m in rows:
        ev = m["events"]
        lines.append(f"{name:>12} {f(m['f1'])} {f(m['false_alarm_rate'])} "
                     f"{f(m['missed_alarm_rate'])} {ev['found']:>3}/{ev['labelled_events']:<2} "
                     f"{ev['false_events']:>8}")
    return "\n".join(lines)


def cmd_publish(args: argparse.Namespace) -> int:
    from models.bundle import BundleError, load_bundle
    from trainer.publish import publish_mqtt, publish_registry

    blob = Path(args.bundle).read_bytes()
    bundle = load_bundle(blob, _trusted(args.trusted_key))  # never publish what agents refuse
    if not (args.registry or args.mqtt_host):
        raise BundleError("nothing to do: pass --registry DIR and/or --mqtt-host HOST")
    if args.registry:
        print(f"registered {publish_registry(blob, args.registry)}")
    if args.mqtt_host:
        topic = publish_mqtt(blob, args.mqtt_host, args.mqtt_port, args.topic_prefix,
                             args.mqtt_username, args.mqtt_password)
        print(f"published {bundle.asset_class} {bundle.version} retained on {topic} "
              f"({len(blob)} bytes)")
    return 0


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected failures print one clear line (no traceback) and exit 2."""

    def run(args: argparse.Namespace) -> int:
        from models.bundle import BundleError
        from trainer.history import DataError

        try:
            return func(args)
        except (DataError, BundleError, FileNotFoundError, FileExistsError, ConnectionError,
                PermissionError) as e:
            print(f"gearwatch train {args.train_command}: error: {e}", file=sys.stderr)
            return 2

    return run


def register(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="fit, evaluate and publish model bundles",
                                  description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = train.add_subparsers(dest="train_command", metavar="STEP", required=True)

    p = sub.add_parser("keygen", help="write an Ed25519 key pair for signing bundles")
    p.add_argument("--out", required=True, help="directory for NAME.key and NAME.pub")
    p.add_argument("--name", default="gearwatch")
    p.set_defaults(func=_guarded(cmd_keygen))

    p = sub.add_parser("quality", help="data-quality report (JSON + text)")
    add_data_args(p)
    add_schema_args(p)
    p.add_argument("--gap-factor", type=float, default=5.0,
                   help="a gap is longer than this many sample periods")
    p.add_argument("--out", help="directory for quality.json and quality.txt")
    p.set_defaults(func=_guarded(cmd_quality))

    p = sub.add_parser("fit", help="fit an LSTM-AE, calibrate, write a signed bundle")
    add_data_args(p)
    add_schema_args(p)
    p.add_argument("--signing-key", required=True, help="Ed25519 private key (PEM)")
    p.add_argument("--out", required=True, help="bundle file to write (.gwb)")
    p.add_argument("--registry", help="also write into this registry folder")
    p.add_argument("--drop", type=_csv_list, default=[], help="sensors to leave out")
    p.add_argument("--drop-recommended", action="store_true",
                   help="leave out the sensors the quality report grades 'drop'")
    p.add_argument("--hidden", type=int, nargs="+", default=[64], help="LSTM sizes")
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--score-steps", type=int, default=5,
                   help="score the mean error of the last N steps of the window")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patience", type=int, default=8, help="early-stopping epochs")
    p.add_argument("--val-frac", type=float, default=0.15)
    p.add_argument("--calib-frac", type=float, default=0.2,
                   help="held-back normal data for calibration (never trained on)")
    p.add_argument("--river", action="store_true", help="also store a warm river detector")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_guarded(cmd_fit))

    p = sub.add_parser("evaluate", help="score labelled history: metrics.json + report.html")
    p.add_argument("--bundle", required=True)
    p.add_argument("--trusted-key", action="append", required=True,
                   help="public key file or directory of *.pub (repeatable)")
    add_data_args(p)
    p.add_argument("--out", required=True, help="directory for metrics.json and report.html")
    p.add_argument("--open-at", type=float, default=4.0, help="event opens at this surprise")
    p.add_argument("--close-below", type=float, default=3.0, help="and closes below this")
    p.add_argument("--min-duration", type=int, default=1, help="samples an event must last")
    p.add_argument("--exclude-from-summary", type=_csv_list, default=[],
                   help="assets summarised apart (e.g. TEP's hard faults 3,9,15)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_guarded(cmd_evaluate))

    p = sub.add_parser("publish", help="verify a bundle, then registry folder and/or MQTT")
    p.add_argument("--bundle", required=True)
    p.add_argument("--trusted-key", action="append", required=True)
    p.add_argument("--registry", help="registry folder")
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--mqtt-username")
    p.add_argument("--mqtt-password")
    p.add_argument("--topic-prefix", default="gearwatch/models")
    p.set_defaults(func=_guarded(cmd_publish))

"""Pure model code shared by the trainer and the edge agent (never imports either).

What the agent calls:

    from models.bundle import load_bundle, load_trusted_keys, BundleError
    from models.ae_scorer import BatchedAEScorer
    from models.event_rule import hysteresis_events

    keys = load_trusted_keys(["/etc/gearwatch/keys"])        # {key_id: Ed25519PublicKey}
    bundle = load_bundle(blob, keys, expected_schema=schema)  # raises a BundleError subclass
    scorer = BatchedAEScorer.from_bundle(bundle, n_assets=n, device="auto", stride=1)
    scorer.push(local_idx, rows)     # newest row per asset, (k, n_sensors), NaN = missing
    out = scorer.score()             # AEScores(idx, raw, score, shares) for ready assets
    detector = bundle.river_detector()   # warm river detector, or None

Modules: `schema` (asset classes), `catalog` (built-in classes), `calibration` (the common
surprise scale), `lstm_ae` (model, normaliser, masked error), `ae_scorer` (batched ring-buffer
scoring), `bundle` (signed bundle format, keys, registry folder), `river_state` (river
detector factory and warm-start pickles), `event_rule` (hysteresis alarm rule).
"""

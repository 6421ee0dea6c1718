"""Train a tiny linear model on the payload's data points.

    python train.py --input_file {{ PAYLOAD_PATH }}

The payload is JSON: {"model_name": "...", "points": [[x, y], ...], "predict": [x, ...]}.
Writes models/model_summary.json (the run's result) and models/model.json (the
artifact). Both are deterministic: the same payload gives byte-identical files.
"""

import argparse
import json
import os
import sys

import annademo

DEFAULT_PAYLOAD = {
    "model_name": "default",
    "points": [[0, 1.0], [1, 3.1], [2, 4.9], [3, 7.2], [4, 8.8]],
    "predict": [5, 10],
}


def load_payload(path):
    if not path:
        # A run without --payload has an empty PAYLOAD_PATH: train on built-in data.
        print("no payload given: using the built-in sample data")
        return DEFAULT_PAYLOAD
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_file", nargs="?", default="", help="payload JSON file")
    args = parser.parse_args(argv)

    payload = load_payload(args.input_file)
    points = payload.get("points") or []
    if len(points) < 2:
        print("error: the payload needs at least two points: [[x, y], ...]", file=sys.stderr)
        return 1
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    model = annademo.fit_line(xs, ys)
    model = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in model.items()}
    predictions = [
        {"x": x, "y": round(annademo.predict(model, x), 6)} for x in payload.get("predict", [])
    ]

    os.makedirs("models", exist_ok=True)
    with open("models/model.json", "w", encoding="utf-8") as f:
        json.dump({"type": "linear", "slope": model["slope"], "intercept": model["intercept"]},
                  f, indent=2, sort_keys=True)
        f.write("\n")
    summary = {
        "model_name": payload.get("model_name", "unnamed"),
        "model": "linear least squares",
        "annademo_version": annademo.__version__,
        "n_points": model["n"],
        "slope": model["slope"],
        "intercept": model["intercept"],
        "r2": model["r2"],
        "predictions": predictions,
    }
    with open("models/model_summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"trained {summary['model_name']}: y = {model['slope']} * x + {model['intercept']}"
          f" (r2={model['r2']}, n={model['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

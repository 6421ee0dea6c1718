"""Predict with the model an earlier run trained (its path is the first argument)."""

import json
import sys

with open(sys.argv[1]) as f:
    model = json.load(f)
prediction = {"x": 10, "y": round(model["a"] * 10 + model["b"], 3)}
with open("prediction.json", "w") as f:
    json.dump(prediction, f)
print(f"prediction for x=10: {prediction['y']}")

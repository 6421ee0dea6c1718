"""Report on a period of days.

    python report.py --from_date 2020-09-07 --until_date 2020-09-11

Writes reports/report.json: the days of the period, how many are working days,
and the TRAINED_MODEL_ID payload variable, read from the environment.
Deterministic: the same arguments give a byte-identical file.
"""

import argparse
import datetime as dt
import json
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from_date", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--until_date", required=True, type=dt.date.fromisoformat)
    args = parser.parse_args(argv)
    if args.until_date < args.from_date:
        print("error: --until_date is before --from_date", file=sys.stderr)
        return 1

    days = []
    day = args.from_date
    while day <= args.until_date:
        days.append({"date": day.isoformat(), "weekday": day.strftime("%A")})
        day += dt.timedelta(days=1)
    report = {
        "from_date": args.from_date.isoformat(),
        "until_date": args.until_date.isoformat(),
        "days": len(days),
        "working_days": sum(1 for d in days if d["weekday"] not in ("Saturday", "Sunday")),
        "trained_model_id": os.environ.get("TRAINED_MODEL_ID", ""),
        "per_day": days,
    }
    os.makedirs("reports", exist_ok=True)
    with open("reports/report.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"{report['days']} days, {report['working_days']} working days"
          f" ({report['from_date']} .. {report['until_date']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

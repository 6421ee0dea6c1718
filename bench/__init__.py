"""`make bench`: anna-run measured against its yardsticks, side by side, on this machine."""

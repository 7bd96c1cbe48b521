"""The tools around the daemon: demo, backtest, benchmarks, evaluation, fault drills, the plant simulator."""

"""The edge collector program (plantwatch collect): its config, runner and buffer watch; device I/O lives in connectors/edge."""

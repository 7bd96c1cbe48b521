"""Configuration: the typed site model, its checks and loader, TLS and inventory sections, the generated reference."""

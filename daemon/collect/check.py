"""``plantwatch config check`` for edge collectors: a collect config alone, or with the site config
it publishes to (either way round), every disagreement an error at ``file:line:col``."""
from __future__ import annotations

from plantwatch.daemon.collect.config import is_collect_config, load_collect_config_located
from plantwatch.daemon.collect.site import SiteView, agreement, load_site
from plantwatch.daemon.config.model import ConfigError


def _summary(path: str, cfg) -> str:
    n = sum(len(s.channels) for s in cfg.sources)
    return (f"{path}: OK — collector {cfg.collector!r} of site {cfg.site!r}, {len(cfg.sources)} source(s), "
            f"{n} channel(s)")


def check_files(file: str, *, site: str | None = None, collect: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The lines to print when everything agrees; raises ConfigError with every problem otherwise."""
    if is_collect_config(file):
        if collect:
            raise ConfigError(file, [f"{file} is a collect config: --collect goes with a site config (use --site)"])
        cfg, located = load_collect_config_located(file)
        if site is None:
            return [_summary(file, cfg)]
        return _against(site, [(file, cfg, located)])
    if site is not None:
        raise ConfigError(file, [f"{file} is not a collect config: --site goes with a collect config (use --collect)"])
    return _against(file, [(c, *load_collect_config_located(c)) for c in collect])


def _against(site_path: str, collects: list[tuple[str, object, object]]) -> list[str]:
    site_cfg, site_located = load_site(site_path)
    view = SiteView.from_config(site_cfg, site_located)
    lines = [f"{site_path}: OK — site {site_cfg.site.id!r}, {len(site_cfg.sensors)} sensors"]
    problems: list[str] = []
    for path, cfg, located in collects:
        bad, notes = agreement(cfg, located, view)
        problems += bad
        if not bad:
            lines.append(_summary(path, cfg) + f"; agrees with {site_path}")
        lines += [f"note: {n}" for n in notes]
    if problems:
        raise ConfigError(collects[0][0] if len(collects) == 1 else site_path, problems)
    return lines

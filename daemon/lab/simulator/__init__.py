"""Plant simulator: a realistic edge collector for a site config (see ``plant`` and ``collector``)."""

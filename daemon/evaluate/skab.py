def eval_skab(*a, **k): raise NotImplementedError

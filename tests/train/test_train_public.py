import foundry.train


def test_public_surface():
    assert sorted(foundry.train.__all__) == [
        "EarlyStopping",
        "FitResult",
        "build_loss",
        "build_optimizer",
        "build_scheduler",
        "fit",
        "n_outputs_for",
    ]
    for name in foundry.train.__all__:
        assert getattr(foundry.train, name) is not None

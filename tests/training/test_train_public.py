import foundry.training


def test_public_surface():
    assert sorted(foundry.training.__all__) == [
        "EarlyStopping",
        "FitResult",
        "build_loss",
        "build_optimizer",
        "build_scheduler",
        "fit",
        "n_outputs_for",
    ]
    for name in foundry.training.__all__:
        assert getattr(foundry.training, name) is not None

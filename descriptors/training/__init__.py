"""copytrace.descriptors.training: training the copy descriptor (SSCD-style): recipe, views,
losses, caches, batch edits, whitening, the Lightning trainer. Only `copytrace train` and the
training benchmarks touch it.

Modules:
    augment.py       Training views for the copy descriptor [tests: test_train.py,
                     test_train_augment.py, test_train_cache.py, ...]
    batch_edits.py   Batch copy edits on tensors (kornia) [tests: test_train_augment.py,
                     test_train_views.py]
    cache.py         Trunk-cached training [tests: test_train_cache.py]
    config.py        The training recipe (`TrainConfig`) and reading it back from a model card
                     [tests: test_train_recipe.py, test_train_views.py]
    data.py          Training data [tests: test_train_augment.py, test_train_cache.py]
    deferred.py      Split views [tests: test_train_views.py]
    edits.py         Cheaper implementations of the copy edits for training views (OpenCV / numpy
                     instead of PIL) [tests: test_train_views.py]
    eval.py          A quick validation proxy during training, on a DISC-style folder (references/,
                     queries/, gt.csv)
    image_cache.py   Decode every training image once [tests: test_train_views.py]
    loading.py       Reading training images [tests: test_train_recipe.py, test_train_views.py]
    losses.py        Losses for the self-supervised copy descriptor (SSCD, Pizzi et al [tests:
                     test_losses.py]
    trainer.py       `copytrace train` [tests: test_train.py, test_train_cache.py,
                     test_train_recipe.py, ...]
    views.py         Which view pipeline makes the live training views, and the dataset for it
                     [tests: test_train_views.py]
    whitening.py     Learned whitening of GeM features from copy pairs (Radenović et al., "Lw"), as
                     the projection [tests: test_train_whitening.py]

The names below are the public API; each is imported on first use (nothing heavy at
import time). Modules and names starting with `_` are private to this package.
"""

from copytrace.util import lazy_api

_EXPORTS = {
    "TrainConfig": "config",
    "ViewConfig": "augment",
    "ViewPipeline": "views",
    "apply_deferred": "batch_edits",
    "build_module_class": "trainer",
    "config_from_flags": "config",
    "list_images": "loading",
    "make_view_dataset": "views",
    "train": "trainer",
}

__all__, __getattr__, __dir__ = lazy_api(__name__, _EXPORTS)

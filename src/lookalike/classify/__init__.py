"""Category classifier: fit / predict_proba on backbone vectors, saved beside the index.

`create_classifier("mlp" | "logreg" | "knn", settings)` gives an unfitted classifier (estimator contract);
`save_classifier` / `load_classifier` write and read JSON + .npz. `plan_search` turns a query
vector's prediction into the partitions a gated search visits. Importing this package does not
import torch or scikit-learn: only `fit` does.
"""

from lookalike.classify import knn as _knn  # noqa: F401  (registers "knn")
from lookalike.classify import logreg as _logreg  # noqa: F401  (registers "logreg")
from lookalike.classify import mlp as _mlp  # noqa: F401  (registers "mlp")
from lookalike.classify.augment import augment_image, augmented_vectors
from lookalike.classify.base import (
    CLASSIFIERS,
    Classifier,
    available_classifiers,
    create_classifier,
    load_classifier,
    save_classifier,
)
from lookalike.classify.gate import GateDecision, plan_search, predict_category
from lookalike.classify.indexed import (
    CLASSIFIER_DIR,
    IndexClassifier,
    TrainingResult,
    catalogue_snapshot,
    stale_reason,
    train_index_classifier,
)
from lookalike.classify.knn import NeighbourClassifier
from lookalike.classify.logreg import LogisticClassifier
from lookalike.classify.mlp import MLPClassifier
from lookalike.classify.split import stratified_split

__all__ = [
    "CLASSIFIERS",
    "CLASSIFIER_DIR",
    "Classifier",
    "GateDecision",
    "IndexClassifier",
    "LogisticClassifier",
    "MLPClassifier",
    "NeighbourClassifier",
    "TrainingResult",
    "augment_image",
    "augmented_vectors",
    "available_classifiers",
    "catalogue_snapshot",
    "create_classifier",
    "load_classifier",
    "plan_search",
    "predict_category",
    "save_classifier",
    "stale_reason",
    "stratified_split",
    "train_index_classifier",
]

"""Patient phenotypes (issue #11): clusters of patients over a declared feature set.

``features`` declares the vectors (the risk family's feature spec and evaluator),
``preprocess`` is the one preprocessing pipeline of both engines (scikit-learn here, Spark
MLlib in ``population.phenotypes_spark``), ``clustering`` chooses k and runs k-means,
DBSCAN and HDBSCAN, ``cohort`` builds the baseline vectors and the outcomes after them,
``describe`` says what each cluster is, ``fit`` writes the artifact and ``model`` serves it.
"""

from models.phenotypes.model import PhenotypeModel, load

__all__ = ["PhenotypeModel", "load"]

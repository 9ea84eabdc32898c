"""Population jobs on Apache Spark: bulk FHIR in, record rows and risk scores out.

Pure with respect to the service: never imports ``cds``, Flask or SQLAlchemy (an
import-linter contract keeps it so); ``cds/commands/population.py`` is the CLI that runs
these jobs and records each run in the audit log. Importing this package does not import
pyspark: only the modules that need it do.

=========================== ==============================================================
module                      what
=========================== ==============================================================
``spark_session``           the one SparkSession factory (``SparkSettings``)
``code_shipping``           the project's packages zipped to a cluster's executors
``fhir_json_schemas``       Spark read schemas per FHIR resource type
``bulk_frames``             a bulk folder's files of one type → DataFrame (``read_type``)
``spark_rows``              record rows in Spark SQL (twin of ``fhir_adapters.record_rows``)
``records_job``             the records job: rows → Parquet, counts observed in one pass
``features``                the feature spec in Spark SQL (``feature_frame``, per row:
                            ``feature_frame_at``), eligibility
``scoring``                 learned risk models in mapInPandas (``score_frame``)
``risk_assessments``        score rows → FHIR RiskAssessment NDJSON
``score_job``               the score job: Parquet scores + RiskAssessment NDJSON
``training_set``            the risk models' training data set (twin of ``training.dataset``)
``train_job``               train on Spark: xgboost.spark + the single-machine calibration
``run_record``              what a run did (``PopulationRun``), for the audit log and run.json
=========================== ==============================================================
"""

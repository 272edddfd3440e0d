"""The mathematics of parameters: calibration, defaults and the choice of query path."""

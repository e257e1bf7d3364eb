"""消保预警: the `xiaobao` command line, front door to training (training/) and serving (service/)."""

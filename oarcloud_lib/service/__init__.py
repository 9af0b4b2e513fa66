"""The life of a cloud job, for every caller (CLI, broker, OAR's hooks, scalers):
admission of a spec, launch, find, delete and end, the hook dispatcher, and the
coordinator that creates or tears down a job's instances on all its nodes.
"""

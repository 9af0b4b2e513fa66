"""What runs on the OAR server: the broker (users' one privileged door), the
monitor and notifications, the healer, the saver, the image store and `setup server`.
"""

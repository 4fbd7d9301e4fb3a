"""The run loop: the coordinator and the parts it is made of (intake, activation, dispatch, reports, restarts, finishing), the owners of its state, and the worker process."""

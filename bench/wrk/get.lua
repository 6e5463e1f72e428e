-- GET one task (TASK_ID) of the bench user.
wrk.path = "/api/jobs?action=get&userId=bench&taskId=" .. os.getenv("TASK_ID")

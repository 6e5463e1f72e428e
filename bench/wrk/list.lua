-- GET the bench-list user's first page of 20 tasks.
wrk.path = "/api/jobs?action=list&userId=bench-list&limit=20"

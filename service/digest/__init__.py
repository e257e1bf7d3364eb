"""投诉处理周报: the weekly complaint-handling digest (figures, rendering, sending). When it goes out is
`service/digest_schedule.py`, beside the settings that validate it."""

"""投诉处理周报: the weekly complaint-handling digest (figures, rendering, sending, schedule)."""

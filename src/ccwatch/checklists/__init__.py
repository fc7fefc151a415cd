"""The daily setup checklist: check types, runner, report and schedule."""

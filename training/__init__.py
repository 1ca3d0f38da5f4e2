"""Fine-tuning: /v1/fine_tuning/jobs, the job state machine and the trainer."""

"""The Slack bot: runs pipelines from Slack as a gRPC client of PipelineService.

Its own process and image (deploy/slackbot/); it uses the client package only, never the
service's (`skit_pipelines`).
"""

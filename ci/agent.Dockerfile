# syntax=docker/dockerfile:1
# The Jenkins agent of the Jenkinsfile (agent { dockerfile { dir 'ci'; filename 'agent.Dockerfile' } },
# build context ci/): every tool the pipeline calls, each at a pinned version.
#   python 3.11 + venv   scripts/test.sh (.venv), scripts/check_infra.sh (.venv-infra), pip-audit
#   node 22 + npm        web/ (npm ci, npm audit) and the Node test clients
#   chromium, ffmpeg     the browser tests, video processing (test.sh needs them without root)
#   docker CLI + buildx  image build and push, against the host's engine through its socket
#   trivy                the container scan
#   aws CLI v2           account id, ECR login, ECS waits and checks (ansible/deploy.yml)
#   terraform            applied by ansible/deploy.yml (community.general.terraform)
#   ansible              /opt/ansible: a venv from ansible-requirements.lock (hashes required),
#                        the same ansible/ansible-core versions check_infra.sh lints with
# Bump a tool by changing its tag here; the RUN at the end prints every version at build time.

FROM node:22.21.1-bookworm-slim AS node
FROM docker:28.2.2-cli AS docker
FROM hashicorp/terraform:1.11.4 AS terraform
FROM aquasec/trivy:0.68.2 AS trivy
FROM amazon/aws-cli:2.27.45 AS awscli

FROM python:3.11.14-slim-bookworm
# gid of the docker socket's group on the Jenkins host (Jenkinsfile: --group-add docker)
ARG DOCKER_GID=999
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# chromium follows Debian's security updates closely (a new upstream major every few weeks), so an
# exact pin would break this build at each of them; bookworm-security is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.* ffmpeg=7:5.1.* chromium \
    && rm -rf /var/lib/apt/lists/*

COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
COPY --from=docker /usr/local/bin/docker /usr/local/bin/docker
COPY --from=docker /usr/local/libexec/docker/cli-plugins/docker-buildx /usr/local/libexec/docker/cli-plugins/docker-buildx
COPY --from=terraform /bin/terraform /usr/local/bin/terraform
COPY --from=trivy /usr/local/bin/trivy /usr/local/bin/trivy
COPY --from=awscli /usr/local/aws-cli/ /usr/local/aws-cli/
COPY ansible-requirements.lock /tmp/ansible-requirements.lock

# Jenkins runs the container as its own uid, which has no entry here: HOME must be writable by
# anyone (npm, pip, ansible and trivy keep caches there).
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && ln -s /usr/local/aws-cli/v2/current/bin/aws /usr/local/bin/aws \
    && python -m venv /opt/ansible \
    && /opt/ansible/bin/pip install --no-cache-dir --require-hashes -r /tmp/ansible-requirements.lock \
    && rm /tmp/ansible-requirements.lock \
    && groupadd --gid "${DOCKER_GID}" docker \
    && mkdir -m 1777 /home/ci \
    && python --version && node --version && npm --version && docker --version && docker buildx version \
    && terraform version && trivy --version && aws --version && /opt/ansible/bin/ansible-playbook --version \
    && chromium --version && ffprobe -hide_banner -version && git --version

ENV HOME=/home/ci \
    ANSIBLE_PLAYBOOK=/opt/ansible/bin/ansible-playbook \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    CHROMIUM=/usr/bin/chromium

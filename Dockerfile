# The ironlb image for those who build with Docker (BuildKit):
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     -t ironlb/ironlb:$(git describe --tags --always --dirty) .
#
# It builds what `make image` writes (same contents, not the same digest):
# FROM scratch, the static binary at /ironlb, user 65532 ("nonroot"). This
# file is not run in this project's CI, which has no Docker daemon;
# `make image` builds the image without one and is what the project tests.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=devel
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH GOTOOLCHAIN=local \
      go build -trimpath -ldflags "-s -w -buildid= -X github.com/ironlb/ironlb/internal/version.Version=${VERSION}" \
      -o /out/ironlb . && \
    mkdir -p /out/etc && \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /out/etc/passwd && \
    printf 'root:x:0:\nnonroot:x:65532:\n' > /out/etc/group

FROM scratch
COPY --from=build /out/etc/passwd /out/etc/group /etc/
COPY --from=build /out/ironlb /ironlb
USER 65532:65532
ENTRYPOINT ["/ironlb"]

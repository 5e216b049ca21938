"""A client of KEDA's external scaler (externalscaler.ExternalScaler), for
the tests and bench/flash_crowd.py: the messages are built from a
FileDescriptorProto written from KEDA's externalscaler.proto (field names
and numbers as published), so no generated stubs are needed."""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def keda_messages():
    """externalscaler's messages from a FileDescriptorProto written from
    KEDA's externalscaler.proto (field names and numbers as published)."""
    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="keda_externalscaler_test.proto", package="externalscaler",
                                            syntax="proto3")

    def msg(name, fields, nested=()):
        m = fd.message_type.add(name=name)
        for n in nested:
            m.nested_type.add().CopyFrom(n)
        for fname, num, typ, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=typ, label=label, json_name=fname)
            if tname:
                f.type_name = tname
        return m

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    entry = descriptor_pb2.DescriptorProto(name="ScalerMetadataEntry")
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt, json_name="key")
    entry.field.add(name="value", number=2, type=F.TYPE_STRING, label=opt, json_name="value")
    entry.options.map_entry = True
    msg("ScaledObjectRef", [("name", 1, F.TYPE_STRING, opt, None), ("namespace", 2, F.TYPE_STRING, opt, None),
                            ("scalerMetadata", 3, F.TYPE_MESSAGE, rep,
                             ".externalscaler.ScaledObjectRef.ScalerMetadataEntry")], [entry])
    msg("IsActiveResponse", [("result", 1, F.TYPE_BOOL, opt, None)])
    msg("GetMetricSpecResponse", [("metricSpecs", 1, F.TYPE_MESSAGE, rep, ".externalscaler.MetricSpec")])
    msg("MetricSpec", [("metricName", 1, F.TYPE_STRING, opt, None), ("targetSize", 2, F.TYPE_INT64, opt, None),
                       ("targetSizeFloat", 3, F.TYPE_DOUBLE, opt, None)])
    msg("GetMetricsRequest", [("scaledObjectRef", 1, F.TYPE_MESSAGE, opt, ".externalscaler.ScaledObjectRef"),
                              ("metricName", 2, F.TYPE_STRING, opt, None)])
    msg("GetMetricsResponse", [("metricValues", 1, F.TYPE_MESSAGE, rep, ".externalscaler.MetricValue")])
    msg("MetricValue", [("metricName", 1, F.TYPE_STRING, opt, None), ("metricValue", 2, F.TYPE_INT64, opt, None),
                        ("metricValueFloat", 3, F.TYPE_DOUBLE, opt, None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    out = {}
    for name in ("ScaledObjectRef", "IsActiveResponse", "GetMetricSpecResponse", "GetMetricsRequest",
                 "GetMetricsResponse"):
        d = pool.FindMessageTypeByName("externalscaler." + name)
        if hasattr(message_factory, "GetMessageClass"):
            out[name] = message_factory.GetMessageClass(d)
        else:
            out[name] = message_factory.MessageFactory(pool).GetPrototype(d)
    return out


M = keda_messages()


def call(ch, method, req_type, rsp_type, stream=False):
    f = ch.unary_stream if stream else ch.unary_unary
    return f("/externalscaler.ExternalScaler/" + method, request_serializer=lambda m: m.SerializeToString(),
             response_deserializer=M[rsp_type].FromString)
